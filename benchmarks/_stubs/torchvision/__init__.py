"""Import-only stand-in for torchvision, used by ``benchmarks/peers.py`` only.

careamics 0.3.5 imports torchvision at package import time (its BioImage Model Zoo export
reads ``torchvision.__version__``; its LVAE modules import ``transforms.functional``), but
Noise2Void never calls it. The torchvision wheels reachable here are CUDA builds that fail
to load next to CPU torch, so the benchmark puts this directory on ``sys.path`` when no real
torchvision is importable. Any actual use raises ``ImportError``.
"""

__version__ = "0.0+stub"


def __getattr__(name: str) -> object:
    raise ImportError(f"torchvision stub: torchvision.{name} is not available")
