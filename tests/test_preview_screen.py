"""The preview's renderer: QImage on offscreen Qt, OpenGL (vispy) on a real X display.

The suite runs on ``QT_QPA_PLATFORM=offscreen``, where OpenGL canvases are blank: there
the widget must pick the QImage pane by itself and say why. The OpenGL pane is checked
under Xvfb (``xvfb-run``, Mesa's llvmpipe) in a subprocess running
``tests/_preview_screen.py``, from the pixels it really drew.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("qtpy", reason="needs qtpy and a Qt binding")
pytest.importorskip("pytestqt", reason="needs pytest-qt")

from qtpy.QtGui import QImage

from sn2n_live.acquisition import LatestPair
from sn2n_live.preview import (
    GL_RENDERER,
    QIMAGE_RENDERER,
    RENDERER_ENV,
    DenoisePreviewWidget,
    choose_renderer,
)
from sn2n_live.preview._view import qimage_to_rgba

SCRIPT = Path(__file__).with_name("_preview_screen.py")
XVFB_RUN = shutil.which("xvfb-run")
SCREEN_TIMEOUT_S = 120  # ~5 s on two idle cores


@pytest.fixture
def no_override(monkeypatch):
    monkeypatch.delenv(RENDERER_ENV, raising=False)


def test_offscreen_qt_gets_the_qimage_pane_and_says_why(qtbot, no_override):
    name, reason = choose_renderer()
    assert name == QIMAGE_RENDERER == "QImage"
    assert "'offscreen'" in reason and "OpenGL" in reason
    w = DenoisePreviewWidget()
    qtbot.addWidget(w)
    assert (w.renderer, w.renderer_reason) == (name, reason)
    assert type(w.raw_pane).__name__ == type(w.denoised_pane).__name__ == "ImagePane"
    assert w.status_text().endswith(" · QImage")
    w.resize(700, 400)
    w.show()
    qtbot.waitExposed(w)
    w.show_pair(_pair(), None)
    raw_px, den_px = w.grab_rendered()  # what the panes painted, pane-sized
    assert raw_px.shape == (w.raw_pane.height(), w.raw_pane.width(), 4)
    assert raw_px[..., :3].std() > 10 and den_px[..., :3].std() > 10


def test_the_renderer_override(qtbot, monkeypatch):
    monkeypatch.setenv(RENDERER_ENV, "qimage")
    name, reason = choose_renderer()
    assert name == QIMAGE_RENDERER and f"{RENDERER_ENV}=qimage" in reason
    assert choose_renderer("QImage")[0] == QIMAGE_RENDERER  # the argument wins, any case
    # Insisting on OpenGL where it cannot draw fails loudly, with the reason.
    monkeypatch.setenv(RENDERER_ENV, "gl")
    with pytest.raises(RuntimeError, match=f"{RENDERER_ENV}=gl asks for OpenGL, but "):
        choose_renderer()
    with pytest.raises(RuntimeError, match="renderer=gl asks for OpenGL"):
        DenoisePreviewWidget(renderer="gl")
    monkeypatch.setenv(RENDERER_ENV, "opengl")
    with pytest.raises(ValueError, match="renderer must be one of"):
        choose_renderer()
    w = DenoisePreviewWidget(renderer="auto")  # the argument wins over the variable
    qtbot.addWidget(w)
    assert w.renderer == QIMAGE_RENDERER


def test_the_opengl_pane_on_a_real_x_display(tmp_path):
    if XVFB_RUN is None:
        if os.environ.get("CI"):
            pytest.fail(
                "xvfb-run is missing, and CI is set: run `make xvfb` (Debian: installs "
                "Xvfb and Mesa GL with apt-get) before the tests."
            )
        pytest.skip("xvfb-run is missing (`make xvfb` installs it); needed for OpenGL")
    pytest.importorskip("vispy", reason="the OpenGL pane needs vispy (the gui extra)")
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    env.pop(RENDERER_ENV, None)
    command = [XVFB_RUN, "-a", "-s", "-screen 0 1280x1024x24", sys.executable, str(SCRIPT)]
    done = subprocess.run(
        [*command, str(tmp_path)], env=env, capture_output=True, text=True,
        timeout=SCREEN_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    px = dict(np.load(tmp_path / "panes.npz"))

    # Auto chose OpenGL there, and the status bar names it.
    assert result["platform"] == "xcb"
    assert result["renderer"] == GL_RENDERER, result["reason"]
    assert result["pane_class"] == "GLImagePane"
    assert result["status"].endswith(f" · {GL_RENDERER}")

    # The whole window, grabbed to PNG: the GL panes are in it, not blank.
    window = qimage_to_rgba(QImage(str(tmp_path / "window.png")))
    assert window.shape[:2] == (640, 1000) and window[..., :3].std() > 20

    # Both panes drew a picture (not one colour), and the denoised one is smoother.
    raw, den = _grey(px["raw"]), _grey(px["denoised"])
    assert min(raw.shape) > 300 and raw.shape == den.shape  # ~3.8 screen px per pixel
    for pane in (raw, den):
        assert pane.std() > 20 and len(np.unique(pane)) > 32
    assert _roughness(den) <= 0.5 * _roughness(raw), (_roughness(den), _roughness(raw))

    # The GL pane draws what the QImage pane paints (same pair, size and view).
    gl, qimage = px["raw_full"].astype(int), px["twin_raw_full"].astype(int)
    assert gl.shape == qimage.shape == (*result["pane_size"][::-1], 4)
    assert result["twin_renderer"] == QIMAGE_RENDERER
    assert f"{RENDERER_ENV}=qimage" in result["twin_reason"]
    assert result["twin_status"].endswith(" · QImage")
    differ = np.abs(gl - qimage)[..., :3].max(-1) > 8
    assert differ.mean() < 0.03, f"{differ.mean():.1%} of pixels differ"

    # A wheel zoom on the raw pane: the denoised pane follows, both redraw zoomed in.
    assert result["view_raw"] == result["view_denoised"]
    assert result["view_raw"][0] == pytest.approx(1.25**3)
    zoomed = _grey(px["raw_zoomed"])
    assert zoomed.std() > 20 and not np.array_equal(zoomed, _grey(px["raw_full"]))
    assert np.abs(_grey(px["denoised_zoomed"]) - _grey(px["raw_full"])).mean() > 5


def _pair() -> LatestPair:
    rng = np.random.default_rng(1)
    clean = np.zeros((64, 64))
    clean[20:24, :] = clean[:, 40:43] = 50.0
    raw = 100 + 2 * rng.poisson(clean + 4)
    return LatestPair(0, {"t": 0}, raw.astype(np.uint16), np.float32(100 + 2 * (clean + 4)), 1.0)


def _grey(rgba: np.ndarray) -> np.ndarray:
    return np.asarray(rgba, np.float64)[..., :3].mean(-1)


def _roughness(grey: np.ndarray) -> float:
    """Mean absolute Laplacian: what noise adds and smoothing removes."""
    g = grey
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.abs(lap).mean())
