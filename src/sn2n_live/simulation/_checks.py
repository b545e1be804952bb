"""Input validation and seeding shared by the simulation modules."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

MIN_SIDE_PX = 16
# Independent random streams derived from one user seed, so structures and camera noise
# never share random numbers.
STRUCTURE_STREAM = 0
NOISE_STREAM = 1


def seed_sequence(seed: int, stream: int) -> np.random.SeedSequence:
    """Return the seed sequence of random ``stream`` for a validated ``seed``."""
    return np.random.SeedSequence(seed, spawn_key=(stream,))


def check_shape(shape: Sequence[int], *, name: str = "shape") -> tuple[int, int]:
    """Return ``shape`` as ``(height, width)`` after checking it is two integers >= 16."""
    try:
        values = tuple(shape)
    except TypeError:
        values = None
    if (
        values is None
        or len(values) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values)
        or min(values) < MIN_SIDE_PX
    ):
        raise ValueError(
            f"{name} must be two integers (height, width), each >= {MIN_SIDE_PX} px; got {shape!r}"
        )
    return int(values[0]), int(values[1])


def check_seed(seed: int) -> int:
    """Return ``seed`` as a Python int after checking it is a non-negative integer."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def check_float(
    value: float, *, name: str, minimum: float | None = None, strict: bool = False
) -> float:
    """Return ``value`` as a finite float, optionally bounded below.

    ``strict=True`` requires ``value > minimum`` instead of ``value >= minimum``.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    value = float(value)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}; got {value!r}")
    return value


def check_vector2(value: Sequence[float], *, name: str) -> tuple[float, float]:
    """Return ``value`` as a pair of finite floats ``(y, x)``."""
    try:
        values = tuple(value)
    except TypeError:
        values = None
    if values is None or len(values) != 2:
        raise ValueError(f"{name} must be a pair of numbers (y, x); got {value!r}")
    return (
        check_float(values[0], name=f"{name}[0] (y)"),
        check_float(values[1], name=f"{name}[1] (x)"),
    )
