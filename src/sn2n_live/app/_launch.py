"""Open the profile's microscope and the window; optionally a timed screenshot, then exit."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from sn2n_live.acquisition import SimulatedMicroscope, open_microscope
from sn2n_live.method import ModelPackage, load_package, pretrained_package
from sn2n_live.profiles import Profile

__all__ = ["LaunchResult", "launch", "resolve_model"]

WINDOW_SIZE = (1500, 860)


@dataclass(frozen=True)
class LaunchResult:
    """What a GUI session ended with (for ``--screenshot`` and tests).

    Attributes
    ----------
    screenshot : Path or None
        The PNG of the whole window, when one was asked for.
    renderer : str
        The preview's rendering path (GL or QImage), as its status bar names it.
    pairs_shown : int
        Raw/denoised pairs the preview displayed.
    last_run : Path or None
        The folder of the last saved run, if any.
    """

    screenshot: Path | None
    renderer: str
    pairs_shown: int
    last_run: Path | None


def resolve_model(profile: Profile, model: str | os.PathLike[str] | None) -> ModelPackage:
    """Return the model to denoise with: ``model``, else the profile's, else the shipped one.

    The shipped pretrained ``lite`` model denoises the simulated microscope well enough
    to look at; a model trained on the user's own pilot frames is what a real sample needs.
    """
    path = model if model is not None else profile.denoise.model
    return pretrained_package() if path is None else load_package(path)


def launch(
    profile: Profile,
    package: ModelPackage,
    *,
    runs_dir: Path,
    live: bool = True,
    seconds: float | None = None,
    screenshot: Path | None = None,
    mda_panel: bool = True,
) -> LaunchResult:
    """Show the sn2n-live window on the profile's microscope until it is closed.

    Parameters
    ----------
    profile : Profile
        Microscope, SIM plan, engine and output settings.
    package : ModelPackage
        The model (see :func:`resolve_model`).
    runs_dir : Path
        Where saved runs go.
    live : bool
        Start in live mode.
    seconds : float, optional
        Close the window after this many seconds (with ``screenshot``: grab it first).
    screenshot : Path, optional
        PNG of the whole window, saved just before it closes.
    mda_panel : bool
        Show pymmcore-widgets' MDA panel.
    """
    from sn2n_live.app._window import LiveDenoiseWindow

    if screenshot is not None and seconds is None:
        raise ValueError("--screenshot needs --seconds N: how long to run before the grab")
    app = QApplication.instance() or QApplication([])
    with open_microscope(profile) as core:
        camera = core.camera_model if isinstance(core, SimulatedMicroscope) else None
        window = LiveDenoiseWindow(
            core, profile, package, runs_dir=runs_dir, mda_panel=mda_panel, camera=camera
        )
        window.resize(*WINDOW_SIZE)
        window.show()
        window.set_live(live)
        grab_failed: list[str] = []
        if seconds is not None:

            def grab_and_close() -> None:
                # A slot that raised would leave the window open: note it, close anyway.
                if screenshot is not None and not window.grab().save(str(screenshot)):
                    grab_failed.append(f"could not write the screenshot {screenshot}")
                window.close()

            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
            QTimer.singleShot(int(seconds * 1000), grab_and_close)
        app.exec()
        window.shutdown()
        if grab_failed:
            raise OSError(grab_failed[0])
        last = Path(window.last_run.out) if window.last_run is not None else None
        preview = window.preview
        result = LaunchResult(screenshot, preview.renderer, preview.state.pairs_shown, last)
        window.deleteLater()
        app.processEvents()
    return result
