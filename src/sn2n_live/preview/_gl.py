"""The OpenGL pane (a vispy canvas) and the choice between it and the QImage pane.

``GLImagePane`` shows the same composited RGBA as ``ImagePane`` (the overlays are
drawn by ``_compose``, not on the GPU), with the same view, signals and methods: the
camera follows the view ``(zoom, cx, cy)`` kept by ``ZoomPanPane``, and the mouse
reaches the pane, not the canvas, so zoom, pan, hover and linking are one code path.

Why vispy and not ndv's canvas: ndv 0.5's ``ArrayCanvas`` can show an image, but it
needs an ``ArrayViewerModel``, blends images additively, and has no public way to
read the view it shows or to hear that it changed; two linked panes need both.

``choose_renderer`` decides which pane a widget gets: OpenGL where a context can be
made and draws, QImage elsewhere (``QT_QPA_PLATFORM=offscreen``, no vispy, no GL).
vispy is imported only here, and only when an OpenGL pane is asked for.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QVBoxLayout, QWidget

from sn2n_live.preview._view import RENDERER, ImagePane, ZoomPanPane

__all__ = [
    "GL_RENDERER",
    "QIMAGE_RENDERER",
    "RENDERER_ENV",
    "GLImagePane",
    "choose_renderer",
    "make_pane",
]

GL_RENDERER = "vispy (OpenGL)"
QIMAGE_RENDERER = RENDERER
RENDERER_ENV = "SN2N_LIVE_RENDERER"
# Qt platforms without a window system: an OpenGL canvas there is blank, or fails.
_HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc")
_CHOICES = ("auto", "gl", "qimage")
_BACKGROUND = (24 / 255, 24 / 255, 24 / 255, 1.0)  # as ImagePane's
_probe: tuple[bool, str] | None = None  # the OpenGL check, once per process


class GLImagePane(ZoomPanPane):
    """The OpenGL pane: a vispy ``SceneCanvas`` with a ``PanZoomCamera`` and an Image.

    Same interface as ``ImagePane``; :meth:`rendered` reads the canvas's framebuffer.
    Needs a Qt application, a platform with OpenGL and vispy (see :func:`choose_renderer`).
    """

    renderer = GL_RENDERER

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        scene = _vispy_scene()
        self._canvas = scene.SceneCanvas(keys=None, bgcolor=_BACKGROUND, parent=self)
        native = self._canvas.native
        # The pane, not the canvas, gets the mouse: one zoom/pan/hover code path.
        native.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(native)
        self._viewbox = self._canvas.central_widget.add_view()
        # y down as in the image; the rect we set is kept as it is (aspect=None).
        camera = scene.PanZoomCamera(aspect=None, flip=(False, True))
        camera.interactive = False
        self._viewbox.camera = camera
        self._visual: Any = None
        self._scene = scene

    def _show_image(self, rgba: np.ndarray) -> None:
        if rgba.size == 0:
            if self._visual is not None:
                self._visual.visible = False
            self._canvas.update()
            return
        if self._visual is None:
            self._visual = self._scene.visuals.Image(
                rgba,
                parent=self._viewbox.scene,
                interpolation="nearest",  # zoomed in, each camera pixel stays a square
                clim=(0, 255),  # the RGBA is final: no contrast stretch on the GPU
            )
        else:
            self._visual.set_data(rgba)
            self._visual.visible = True
        self._view_moved()

    def _view_moved(self) -> None:
        """Point the camera at the view: the image rectangle the pane shows."""
        s = self._scale()
        cx, cy = self._centre()
        w, h = max(self.width(), 1) / s, max(self.height(), 1) / s
        self._viewbox.camera.rect = (cx - w / 2, cy - h / 2, w, h)
        self._canvas.update()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._view_moved()

    def rendered(self) -> np.ndarray:
        """Draw the canvas now and read its framebuffer: ``(height, width, 4)`` uint8 RGBA."""
        return np.asarray(self._canvas.render(alpha=True), np.uint8)

    def close_canvas(self) -> None:
        """Let go of the canvas and its OpenGL resources."""
        self._canvas.close()


def make_pane(renderer: str, parent: QWidget | None = None) -> ZoomPanPane:
    """Make a pane for ``renderer`` (a name :func:`choose_renderer` returned)."""
    return GLImagePane(parent) if renderer == GL_RENDERER else ImagePane(parent)


def choose_renderer(prefer: str | None = None) -> tuple[str, str]:
    """Which pane to draw with here, and why: ``(name, reason)``.

    Parameters
    ----------
    prefer : {"auto", "gl", "qimage"}, optional
        ``"auto"`` picks OpenGL when a context can be made and a test render draws, and
        QImage otherwise (an offscreen or minimal Qt platform, no vispy, no OpenGL).
        ``"gl"`` insists on OpenGL (RuntimeError with the reason where it cannot work),
        ``"qimage"`` takes the pure-Qt pane. Default: the environment variable
        ``SN2N_LIVE_RENDERER``, else ``"auto"``. Needs a QApplication (except "qimage").

    Returns
    -------
    name : str
        ``"vispy (OpenGL)"`` or ``"QImage"``: what the status bar shows.
    reason : str
        Why: the override, or what made the automatic choice fall back.
    """
    source = "renderer="
    if prefer is None:
        prefer, source = os.environ.get(RENDERER_ENV) or "auto", f"{RENDERER_ENV}="
    choice = prefer.strip().lower()
    if choice not in _CHOICES:
        raise ValueError(f"renderer must be one of {_CHOICES}; got {prefer!r}.")
    if choice == "qimage":
        return QIMAGE_RENDERER, f"{source}{prefer} asks for the QImage pane"
    if choice == "auto":
        platform = _platform_name()
        if platform in _HEADLESS_PLATFORMS:
            return QIMAGE_RENDERER, (
                f"the Qt platform {platform!r} has no window system: OpenGL canvases are "
                "blank there"
            )
    ok, why = _opengl_works()
    if ok:
        return GL_RENDERER, why if choice == "auto" else f"{source}{prefer}; {why}"
    if choice == "gl":
        raise RuntimeError(f"{source}{prefer} asks for OpenGL, but {why}")
    return QIMAGE_RENDERER, why


def _platform_name() -> str:
    from qtpy.QtGui import QGuiApplication

    if QGuiApplication.instance() is None:
        raise RuntimeError("choose_renderer needs a QApplication; create one first.")
    return QGuiApplication.platformName()


def _opengl_works() -> tuple[bool, str]:
    """Whether vispy imports, a QOpenGLContext is made and a test canvas draws (cached)."""
    global _probe
    if _probe is None:
        _probe = _probe_opengl()
    return _probe


def _probe_opengl() -> tuple[bool, str]:
    try:
        scene = _vispy_scene()
    except Exception as exc:  # not installed, or no backend for this Qt binding
        return False, f"vispy is not usable: {type(exc).__name__}: {exc}"
    from qtpy.QtGui import QOpenGLContext

    if not QOpenGLContext().create():
        return False, f"no OpenGL context can be created on Qt platform {_platform_name()!r}"
    canvas = None
    try:  # a context is not enough: draw a red 8x8 canvas and read it back
        canvas = scene.SceneCanvas(size=(8, 8), bgcolor=(1.0, 0.0, 0.0, 1.0), show=False)
        pixels = np.asarray(canvas.render(alpha=True))
        drew = pixels.shape[:2] == (8, 8) and bool(
            (pixels[..., 0] > 200).all() and (pixels[..., 1] < 50).all()
        )
    except Exception as exc:
        return False, f"an OpenGL test render failed: {type(exc).__name__}: {exc}"
    finally:
        if canvas is not None:
            canvas.close()
    if not drew:
        return False, "an OpenGL test render drew the wrong pixels"
    return True, "an OpenGL context draws here"


def _vispy_scene() -> Any:
    """``vispy.scene``, its app bound to qtpy's Qt binding."""
    import qtpy
    import vispy.app
    from vispy import scene

    vispy.app.use_app(qtpy.API_NAME.lower())
    return scene
