"""SIM reconstruction (numpy/torch only)."""

from ._calibration import AngleParameters, SIMCalibration
from ._estimate import estimate_calibration
from ._otf import OTFModel
from ._wiener import WienerReconstructor, widefield

__all__ = [
    "AngleParameters",
    "OTFModel",
    "SIMCalibration",
    "WienerReconstructor",
    "estimate_calibration",
    "widefield",
]
