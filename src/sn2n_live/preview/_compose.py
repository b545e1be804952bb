"""From a :class:`PreviewState` to the two panes' pixels: which image, which limits.

Pure numpy (the widget paints the result); kept apart from ``_render`` so that the
rendering primitives know nothing of the state.
"""

from __future__ import annotations

import numpy as np

from sn2n_live.preview._model import PreviewState
from sn2n_live.preview._render import (
    DIVERGING,
    auto_limits,
    blend_risk,
    residual,
    residual_limits,
    to_rgba,
)

__all__ = ["pane_images", "render_panes"]


def pane_images(state: PreviewState) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Pick the images under the colormap: the raw pane's and the denoised pane's.

    The raw pane shows the SIM widefield image when that overlay is on and one was given,
    the denoised pane the SIM reconstruction likewise.
    """
    left = state.widefield if state.showing_widefield() else state.raw
    if state.denoised is not None and state.showing_recon():
        return left, state.recon
    return left, state.denoised


def _limits(
    state: PreviewState, left: np.ndarray, right: np.ndarray
) -> tuple[tuple[float, float], tuple[float, float]]:
    if state.contrast == "manual":
        if state.linked:
            return state.manual_raw, state.manual_raw
        return state.manual_raw, state.manual_denoised
    # The reconstruction gets limits of its own: Wiener filtering changes the range.
    if state.linked and not state.showing_recon():
        both = auto_limits(left, right, percentiles=state.percentiles)
        return both, both
    return (
        auto_limits(left, percentiles=state.percentiles),
        auto_limits(right, percentiles=state.percentiles),
    )


def render_panes(state: PreviewState) -> tuple[np.ndarray, np.ndarray]:
    """Render both panes and record the limits used in ``state.limits_raw/denoised``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(raw_rgba, denoised_rgba)``, each ``(H, W, 4)`` uint8; ``(0, 0, 4)`` before the
        first pair. The residual overlay replaces the denoised image by ``raw - denoised``
        in a diverging map centred at 0 (limits symmetric, its own); the risk overlay
        veils the denoised pane red where the pair's risk is high. The reconstruction
        overlay shows the SIM reconstruction in the denoised pane (``(2H, 2W, 4)``), with
        auto limits of its own, and neither of the other two.
    """
    left, right = pane_images(state)
    if left is None or right is None:
        empty = np.zeros((0, 0, 4), np.uint8)
        return empty, empty.copy()
    lim_left, lim_right = _limits(state, left, right)
    state.limits_raw, state.limits_denoised = lim_left, lim_right
    raw_rgba = to_rgba(left, lim_left, state.colormap)
    if state.showing_recon():
        return raw_rgba, to_rgba(right, lim_right, state.colormap)
    if "residual" in state.overlays and state.raw is not None:
        res = residual(state.raw, right)
        den_rgba = to_rgba(res, residual_limits(res), DIVERGING)
    else:
        den_rgba = to_rgba(right, lim_right, state.colormap)
    risk = None if state.risk is None else np.asarray(state.risk)
    # A risk map of another shape (another run's) is not drawn rather than misplaced.
    if "risk" in state.overlays and risk is not None and risk.shape == den_rgba.shape[:2]:
        den_rgba = blend_risk(den_rgba, risk)
    return raw_rgba, den_rgba
