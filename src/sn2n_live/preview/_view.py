"""The image view: one pane that paints an RGBA buffer with zoom and pan.

It knows nothing of acquisition or of what the pixels mean; it reports the view it
shows (``view_changed``) and the pixel under the cursor (``hovered``), and the
controller links panes and reads values.

``ZoomPanPane`` holds the view (zoom, centre, the mouse); ``ImagePane`` paints with
QPainter/QImage, the OpenGL pane (``_gl.GLImagePane``) with a vispy canvas.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QWheelEvent
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["RENDERER", "ImagePane", "ZoomPanPane"]

# The QImage pane's rendering path, as the status bar names it (the fallback renderer).
RENDERER = "QImage"
MIN_ZOOM, MAX_ZOOM = 0.1, 64.0
_WHEEL_STEP = 1.25  # zoom factor per wheel notch (120 eighths of a degree)


class ZoomPanPane(QWidget):
    """A pane showing a ``(H, W, 4)`` uint8 RGBA image, fitted to the pane, zoomed and panned.

    The view is ``(zoom, cx, cy)``: ``zoom`` 1 fits the whole image, ``(cx, cy)`` is the
    image point (pixels, x right, y down) at the pane's centre. Wheel zooms about the
    cursor; a left-button drag pans; a double click fits the image again. Subclasses
    draw: :meth:`_show_image` takes a new image, :meth:`_view_moved` a new view.

    Signals
    -------
    view_changed(float, float, float)
        ``(zoom, cx, cy)`` after a wheel or drag (not after :meth:`set_view`).
    hovered(int, int)
        ``(row, col)`` of the image pixel under the cursor, ``(-1, -1)`` off the image.
    """

    renderer = "?"  # the rendering path, as the status bar names it
    view_changed = Signal(float, float, float)
    hovered = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rgba = np.zeros((0, 0, 4), np.uint8)
        self._zoom = 1.0
        self._center: tuple[float, float] | None = None
        self._drag_from: QPointF | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def _show_image(self, rgba: np.ndarray) -> None:
        """Draw a new image (the view is already updated)."""
        self.update()

    def _view_moved(self) -> None:
        """Draw the new view."""
        self.update()

    # -- content -----------------------------------------------------------------------

    def set_image(self, rgba: np.ndarray) -> None:
        """Show ``rgba`` (kept, not copied: the QImage reads the array's buffer)."""
        rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(f"an RGBA image is (H, W, 4); got {rgba.shape}.")
        old_shape = self._rgba.shape[:2]
        self._rgba = rgba
        if old_shape != rgba.shape[:2]:  # another camera size: start from the whole image again
            self._center = None
        self._show_image(rgba)

    def rgba(self) -> np.ndarray:
        """Return the image shown (the pane's own array; do not modify)."""
        return self._rgba

    def rendered(self) -> np.ndarray:
        """Read back what the pane shows on screen: ``(height, width, 4)`` uint8 RGBA."""
        return qimage_to_rgba(self.grab().toImage())

    # -- view ----------------------------------------------------------------------------

    def view(self) -> tuple[float, float, float]:
        """``(zoom, cx, cy)``."""
        cx, cy = self._centre()
        return self._zoom, cx, cy

    def set_view(self, zoom: float, cx: float, cy: float) -> None:
        """Show the image at ``zoom`` centred on ``(cx, cy)`` (no ``view_changed``)."""
        self._zoom = min(MAX_ZOOM, max(MIN_ZOOM, float(zoom)))
        self._center = (float(cx), float(cy))
        self._view_moved()

    def reset_view(self) -> None:
        """Fit the whole image."""
        self._zoom, self._center = 1.0, None
        self._view_moved()

    def _centre(self) -> tuple[float, float]:
        if self._center is not None:
            return self._center
        h, w = self._rgba.shape[:2]
        return w / 2, h / 2

    def _scale(self) -> float:
        """Pane pixels per image pixel."""
        h, w = self._rgba.shape[:2]
        if not h or not w:
            return 1.0
        return min(self.width() / w, self.height() / h) * self._zoom

    def to_image(self, pos: QPointF) -> tuple[float, float]:
        """Map a pane position to the image point ``(x, y)``."""
        s = self._scale()
        cx, cy = self._centre()
        return cx + (pos.x() - self.width() / 2) / s, cy + (pos.y() - self.height() / 2) / s

    def pixel_at(self, pos: QPointF) -> tuple[int, int] | None:
        """``(row, col)`` of the image pixel at a pane position, None off the image."""
        h, w = self._rgba.shape[:2]
        x, y = self.to_image(pos)
        row, col = math.floor(y), math.floor(x)
        return (row, col) if 0 <= row < h and 0 <= col < w else None

    def zoom_at(self, factor: float, pos: QPointF) -> None:
        """Zoom by ``factor`` keeping the image point under ``pos`` in place."""
        x, y = self.to_image(pos)
        self._zoom = min(MAX_ZOOM, max(MIN_ZOOM, self._zoom * factor))
        s = self._scale()
        self._center = (x - (pos.x() - self.width() / 2) / s, y - (pos.y() - self.height() / 2) / s)
        self._view_moved()
        self.view_changed.emit(*self.view())

    def pan_by(self, dx: float, dy: float) -> None:
        """Move the image by ``(dx, dy)`` pane pixels."""
        s = self._scale()
        cx, cy = self._centre()
        self._center = (cx - dx / s, cy - dy / s)
        self._view_moved()
        self.view_changed.emit(*self.view())

    # -- Qt events -----------------------------------------------------------------------

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom_at(_WHEEL_STEP**steps, event.position())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag_from = event.position()
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if self._drag_from is not None and event.buttons() & Qt.MouseButton.LeftButton:
            d = pos - self._drag_from
            self._drag_from = pos
            self.pan_by(d.x(), d.y())
        pixel = self.pixel_at(pos)
        self.hovered.emit(*(pixel if pixel is not None else (-1, -1)))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag_from = None
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.reset_view()
        self.view_changed.emit(*self.view())

    def leaveEvent(self, event: QEvent) -> None:
        self.hovered.emit(-1, -1)


class ImagePane(ZoomPanPane):
    """The pure-Qt pane: paints its RGBA image with QPainter from a QImage (any platform)."""

    renderer = RENDERER

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None

    def _show_image(self, rgba: np.ndarray) -> None:
        # The QImage reads the array's buffer: the pane keeps the array.
        h, w = rgba.shape[:2]
        self._image = None if rgba.size == 0 else QImage(rgba.data, w, h, 4 * w, _RGBA8888)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        try:
            painter.fillRect(self.rect(), QColor(24, 24, 24))
            if self._image is None:
                return
            h, w = self._rgba.shape[:2]
            s = self._scale()
            cx, cy = self._centre()
            left, top = self.width() / 2 - cx * s, self.height() / 2 - cy * s
            # Nearest neighbour: zoomed in, each camera pixel stays a square.
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            painter.drawImage(QRectF(left, top, w * s, h * s), self._image, QRectF(0, 0, w, h))
        finally:
            painter.end()


def qimage_to_rgba(image: QImage) -> np.ndarray:
    """Copy a QImage into a ``(height, width, 4)`` uint8 RGBA array."""
    image = image.convertToFormat(_RGBA8888)
    h, w = image.height(), image.width()
    rows = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * h)
    return rows.reshape(h, image.bytesPerLine())[:, : 4 * w].reshape(h, w, 4).copy()


_RGBA8888 = QImage.Format.Format_RGBA8888
