"""Show a synthetic pair in DenoisePreviewWidget on a real X display; save what it drew.

Run by tests/test_preview_screen.py under ``xvfb-run`` with ``QT_QPA_PLATFORM=xcb``:
``python _preview_screen.py OUT_DIR``. Writes ``window.png`` (the whole widget grabbed),
``panes.npz`` (each pane's rendered pixels, cropped to the image; the linked-zoom and
QImage-twin renders) and ``result.json`` (renderer, reason, status text, views).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPoint, QPointF, Qt
from qtpy.QtGui import QWheelEvent
from qtpy.QtWidgets import QApplication
from scipy import ndimage

from sn2n_live.acquisition import LatestPair
from sn2n_live.preview import RENDERER_ENV, DenoisePreviewWidget

SIDE = 128


def synthetic_pair(seed: int = 0) -> LatestPair:
    """Raw: Poisson photons of bright filaments and spots; denoised: the clean image blurred."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    clean = np.full((SIDE, SIDE), 4.0)
    for a, b, c in ((0.4, -1.0, 30.0), (-0.8, -1.0, 110.0), (1.0, -3.0, 200.0)):
        distance = np.abs(a * xx + b * yy + c) / np.hypot(a, b)
        clean += 40.0 * np.exp(-0.5 * (distance / 1.5) ** 2)
    for y, x in rng.uniform(10, SIDE - 10, (6, 2)):
        clean += 80.0 * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / 2.0**2)
    offset, gain = 100.0, 2.0
    raw = offset + gain * rng.poisson(clean)
    denoised = offset + gain * ndimage.gaussian_filter(clean, 1.0)
    return LatestPair(
        frame=0,
        index={"t": 0},
        raw=raw.astype(np.uint16),
        denoised=denoised.astype(np.float32),
        latency_ms=5.0,
    )


def settle(app: QApplication, seconds: float = 0.3) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def image_crop(pane, pixels: np.ndarray) -> np.ndarray:
    """The part of a pane's rendered pixels the image covers (at the fitted view)."""
    h, w = pane.rgba().shape[:2]
    _, cx, cy = pane.view()
    s = pane._scale()  # pane pixels per image pixel
    ph, pw = pixels.shape[:2]
    left, top = pw / 2 - cx * s, ph / 2 - cy * s
    x0, y0 = int(np.ceil(max(left, 0))), int(np.ceil(max(top, 0)))
    x1, y1 = int(min(left + w * s, pw)), int(min(top + h * s, ph))
    return pixels[y0:y1, x0:x1]


def wheel(pane, steps: int, pos: QPointF) -> None:
    event = QWheelEvent(
        pos, pane.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase, False,
    )  # fmt: skip
    QApplication.sendEvent(pane, event)


def show(pair: LatestPair, app: QApplication, **kw) -> DenoisePreviewWidget:
    w = DenoisePreviewWidget(camera={"offset_adu": 100.0, "gain_adu_per_e": 2.0}, **kw)
    w.resize(1000, 640)
    w.show()
    settle(app)
    w.show_pair(pair, None)
    settle(app)
    return w


def main(out: Path) -> None:
    app = QApplication.instance() or QApplication([])
    pair = synthetic_pair()
    w = show(pair, app)
    w.grab().save(str(out / "window.png"))
    raw_px, den_px = w.grab_rendered()
    arrays = {
        "raw": image_crop(w.raw_pane, raw_px),
        "denoised": image_crop(w.denoised_pane, den_px),
        "raw_full": raw_px,
    }
    result = {
        "platform": app.platformName(),
        "renderer": w.renderer,
        "reason": w.renderer_reason,
        "status": w.status_text(),
        "pane_class": type(w.raw_pane).__name__,
        "pane_size": [w.raw_pane.width(), w.raw_pane.height()],
    }

    # Zoom the raw pane by the wheel about a point: the denoised pane follows; both redraw.
    centre = QPointF(w.raw_pane.width() / 2, w.raw_pane.height() / 2)
    wheel(w.raw_pane, 3, centre + QPointF(40, 20))
    settle(app, 0.2)
    result["view_raw"], result["view_denoised"] = w.raw_pane.view(), w.denoised_pane.view()
    arrays["raw_zoomed"], arrays["denoised_zoomed"] = w.grab_rendered()
    w.raw_pane.reset_view()
    w.denoised_pane.reset_view()

    # The QImage twin (the override), same size and pair: its pixels to compare with GL's.
    import os

    os.environ[RENDERER_ENV] = "qimage"
    twin = show(pair, app)
    result["twin_renderer"], result["twin_reason"] = twin.renderer, twin.renderer_reason
    result["twin_status"] = twin.status_text()
    arrays["twin_raw_full"] = twin.grab_rendered()[0]
    np.savez_compressed(out / "panes.npz", **arrays)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    w.close()
    twin.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
