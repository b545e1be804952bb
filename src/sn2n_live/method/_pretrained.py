"""The pretrained starting points shipped with sn2n-live.

A pretrained package is an ordinary ``twin``-recipe model trained by our own training code
on simulated low-light frames (``scripts/pretrain.py`` regenerates it; its provenance
records the data, seeds and command). Fine-tuning from it (``train(..., init=...)``,
``sn2n-live train --init pretrained``) starts from a network that already denoises, so a
short pilot training spends its minutes on the user's sample, not on learning to denoise.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from sn2n_live.config import TrainingInit, UNetPreset
from sn2n_live.method._package import ModelPackage, ModelPackageError, load_package

__all__ = ["PRETRAINED", "initial_package", "pretrained_package", "pretrained_path"]

# The U-Net presets a pretrained package ships for.
PRETRAINED: tuple[UNetPreset, ...] = (UNetPreset.LITE,)


def pretrained_path(name: str = UNetPreset.LITE) -> Path:
    """Return the file of a shipped pretrained package.

    Parameters
    ----------
    name : str
        One of :data:`PRETRAINED` (the U-Net preset it was trained for).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained model {name!r}; choose one of: {', '.join(PRETRAINED)}")
    return Path(str(files("sn2n_live.method") / "pretrained" / f"{name}.sn2n"))


def pretrained_package(name: str = UNetPreset.LITE) -> ModelPackage:
    """Load a shipped pretrained package (verified like any package).

    Parameters
    ----------
    name : str
        One of :data:`PRETRAINED`.

    Returns
    -------
    ModelPackage

    Raises
    ------
    ModelPackageError
        If the shipped file is missing or damaged (regenerate it with ``make pretrained``).
    """
    path = pretrained_path(name)
    if not path.is_file():
        raise ModelPackageError(
            f"the pretrained {name!r} model is missing from this installation ({path}); "
            "regenerate it with `make pretrained` or reinstall sn2n-live"
        )
    return load_package(path)


def initial_package(init: str | Path) -> ModelPackage | None:
    """Resolve a training ``init`` choice to the package to start from.

    Parameters
    ----------
    init : str or Path
        ``"scratch"`` (random initialization: None), ``"pretrained"`` (the shipped ``lite``
        model) or the path of any ``.sn2n`` package (continue from it).

    Returns
    -------
    ModelPackage or None

    Raises
    ------
    ModelPackageError
        If the package cannot be read.
    """
    if str(init) == TrainingInit.SCRATCH:
        return None
    if str(init) == TrainingInit.PRETRAINED:
        return pretrained_package(UNetPreset.LITE)
    return load_package(init)
