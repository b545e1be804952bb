"""SIM pattern parameters of a microscope, saved once and reused for every set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._otf import OTFModel

CALIBRATION_FORMAT = "sn2n-live-sim-calibration"
CALIBRATION_VERSION = 1


class AngleParameters(BaseModel):
    """The illumination pattern of one orientation.

    Pattern ``p`` of the orientation excites ``1 + modulation * cos(2π k·r + phases[p])``,
    with ``k = wavevector`` ``(ky, kx)`` in cycles per camera pixel and ``r = (y, x)`` in
    pixels from the centre of the top-left pixel (the simulated microscope's convention,
    :class:`sn2n_live.simulation.SIMIllumination`). ``k`` and ``-k`` with negated phases
    are the same pattern; the estimate picks the sign for which the phases step upwards.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    wavevector: tuple[float, float]
    phases_rad: tuple[float, ...] = Field(min_length=1)
    modulation: float = Field(ge=0.0)

    @property
    def period_px(self) -> float:
        """The stripe period in camera pixels."""
        return float(1.0 / np.hypot(*self.wavevector))

    @property
    def orientation_deg(self) -> float:
        """The direction of the wave vector, in degrees from the x axis."""
        return float(np.degrees(np.arctan2(self.wavevector[0], self.wavevector[1])))


class SIMCalibration(BaseModel):
    """Everything a 2-D SIM reconstruction needs besides the frames.

    Estimated from one set (:func:`~sn2n_live.sim.estimate_calibration`), saved with
    :meth:`save`, reloaded with :meth:`load`, and reused for every later set of the same
    microscope and pattern (the parameters do not change between time points).

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` of the frames it was estimated on, in camera pixels.
    otf : OTFModel
        The detection OTF.
    angles : list of AngleParameters
        One per orientation, in acquisition order; each has ``n_phases`` phases.
    source : str
        Where it was estimated (a run folder and set, or a file), for provenance.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    format: str = CALIBRATION_FORMAT
    format_version: int = CALIBRATION_VERSION
    shape: tuple[int, int]
    otf: OTFModel
    angles: tuple[AngleParameters, ...] = Field(min_length=1)
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.format != CALIBRATION_FORMAT:
            raise ValueError(f"not a SIM calibration (format {self.format!r})")
        phases = {len(a.phases_rad) for a in self.angles}
        if len(phases) != 1:
            raise ValueError(f"every angle needs the same number of phases; got {phases}")
        return self

    @property
    def n_angles(self) -> int:
        """Orientations per set."""
        return len(self.angles)

    @property
    def n_phases(self) -> int:
        """Phases per orientation."""
        return len(self.angles[0].phases_rad)

    @property
    def set_size(self) -> int:
        """Frames per set, ``n_angles * n_phases`` (angle slow, phase fast)."""
        return self.n_angles * self.n_phases

    def wavevectors(self) -> np.ndarray:
        """``(n_angles, 2)`` wave vectors ``(ky, kx)`` in cycles/px."""
        return np.array([a.wavevector for a in self.angles], dtype=np.float64)

    def phases(self) -> np.ndarray:
        """``(n_angles, n_phases)`` pattern phases in radians."""
        return np.array([a.phases_rad for a in self.angles], dtype=np.float64)

    def modulations(self) -> np.ndarray:
        """``(n_angles,)`` modulation depths."""
        return np.array([a.modulation for a in self.angles], dtype=np.float64)

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON to ``path`` and return it."""
        path = Path(path)
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SIMCalibration:
        """Read a calibration written by :meth:`save`.

        Raises
        ------
        ValueError
            If the file is not a readable SIM calibration (the message names the file).
        """
        path = Path(path)
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, ValidationError) as exc:
            raise ValueError(
                f"{path} is not a SIM calibration this version can read ({exc}); estimate "
                "one again with `sn2n-live reconstruct RUN --save-calibration FILE`"
            ) from exc
