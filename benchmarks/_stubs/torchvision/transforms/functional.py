"""Stub ``torchvision.transforms.functional`` (see the package docstring)."""


def __getattr__(name: str) -> object:
    raise ImportError(
        f"torchvision stub: torchvision.transforms.functional.{name} is not available"
    )
