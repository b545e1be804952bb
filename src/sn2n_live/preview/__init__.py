"""The live preview: raw and denoised side by side while a live-denoise run goes on.

Usage (in a Qt application, e.g. next to pymmcore-widgets)::

    from sn2n_live.preview import DenoisePreviewWidget

    widget = DenoisePreviewWidget(provenance=denoiser.provenance)
    widget.show()
    with live_denoise(core, model=denoiser, out="runs/001", events=events) as h:
        widget.set_handler(h)
        thread = core.run_mda(events)
        ...  # the Qt event loop runs; the widget polls h at 10 Hz

Modules, models, views and controllers apart (ndv's way):

- ``_render``: pure numpy; contrast limits, colormap LUTs, residual, risk veil, widefield
- ``_model``: ``PreviewState`` (what is shown), ``RunHealth`` (warnings), the status line
- ``_compose``: from the state to the two panes' RGBA pixels
- ``_view``: ``ZoomPanPane`` (the view: zoom, pan, hover) and ``ImagePane``, its QImage
  painter; they know nothing of acquisition
- ``_gl``: ``GLImagePane``, the same pane on a vispy OpenGL canvas, and
  ``choose_renderer``: OpenGL where a context draws, QImage elsewhere (offscreen Qt, no
  vispy); ``SN2N_LIVE_RENDERER=gl|qimage`` or the widget's ``renderer=`` overrides it
- ``_widget``: ``DenoisePreviewWidget``, the controller that polls a ``LiveHandler``

Only ``_view``, ``_gl`` and ``_widget`` import Qt (``_gl`` vispy too, when asked for an
OpenGL pane); the package reads acquisition through its public face
(``sn2n_live.acquisition``) and never the other way round.
"""

from sn2n_live.preview._compose import render_panes
from sn2n_live.preview._gl import (
    GL_RENDERER,
    QIMAGE_RENDERER,
    RENDERER_ENV,
    GLImagePane,
    choose_renderer,
)
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
from sn2n_live.preview._view import RENDERER, ImagePane, ZoomPanPane
from sn2n_live.preview._widget import DenoisePreviewWidget

__all__ = [
    "COLORMAPS",
    "GL_RENDERER",
    "QIMAGE_RENDERER",
    "RENDERER",
    "RENDERER_ENV",
    "CameraCalibration",
    "DenoisePreviewWidget",
    "GLImagePane",
    "ImagePane",
    "Notice",
    "PreviewState",
    "Readout",
    "RunHealth",
    "ZoomPanPane",
    "auto_limits",
    "blend_risk",
    "choose_renderer",
    "colormap_lut",
    "colormaps_available",
    "render_panes",
    "residual",
    "residual_limits",
    "status_line",
    "to_rgba",
    "widefield_image",
]
