"""Stub ``torchvision.transforms`` (see the package docstring)."""


def __getattr__(name: str) -> object:
    raise ImportError(f"torchvision stub: torchvision.transforms.{name} is not available")
