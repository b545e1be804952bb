"""sn2n-live: live Adaptive-SN2N denoising for pymmcore-plus (SIM) acquisitions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sn2n-live")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
