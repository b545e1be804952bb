"""The live preview: raw and denoised side by side while a live-denoise run goes on.

Modules, models, views and controllers apart (ndv's way):

- ``_render``: pure numpy; contrast limits, colormap LUTs, residual, risk veil, widefield
- ``_model``: ``PreviewState`` (what is shown), ``RunHealth`` (warnings), the status line
- ``_compose``: from the state to the two panes' RGBA pixels

None of these imports Qt; the package reads acquisition through its
public face (``sn2n_live.acquisition``) and never the other way round.
"""

from sn2n_live.preview._compose import render_panes
from sn2n_live.preview._model import (
    CameraCalibration,
    Notice,
    PreviewState,
    Readout,
    RunHealth,
    status_line,
)
from sn2n_live.preview._render import (
    COLORMAPS,
    auto_limits,
    blend_risk,
    colormap_lut,
    colormaps_available,
    residual,
    residual_limits,
    to_rgba,
    widefield_image,
)

__all__ = [
    "COLORMAPS",
    "CameraCalibration",
    "Notice",
    "PreviewState",
    "Readout",
    "RunHealth",
    "auto_limits",
    "blend_risk",
    "colormap_lut",
    "colormaps_available",
    "render_panes",
    "residual",
    "residual_limits",
    "status_line",
    "to_rgba",
    "widefield_image",
]
