"""SN2N twin generation: diagonal 2x2 resampling and Fourier up-sampling (method.md §1.2-1.3).

A noisy frame is split into two half-size "twins" whose pixels average the two diagonals of
each 2x2 cell.  Both twins sample the same cell centre, so their signal agrees while their
(pixel-independent) noise is independent; the network learns to map one twin to the other.
The twins are band-limited up-sampled back to the frame's pixel size.

Implemented from the description of the official code (MATLAB ``interpft`` semantics), not
from its source.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import torch

__all__ = [
    "UpsampleMode",
    "compensate_twin_sampling",
    "diagonal_twins",
    "diagonal_twins_tensor",
    "fourier_upsample",
    "fourier_upsample_tensor",
    "make_twins",
    "make_twins_tensor",
]

UpsampleMode = Literal["official", "exact", "none"]

# Smallest diagonal-mean gain that the compensation divides by: the gain reaches 0 only at
# the corners of the twins' band (|fx +- fy| -> 1/2), where optics leave almost no signal.
_MIN_TWIN_GAIN = 0.3

# Upper bound on complex samples held per FFT chunk (~64 MiB at complex128), so that large
# stacks are up-sampled in slices of their leading axes instead of all at once.
_CHUNK_SAMPLES = 1 << 22


def _as_real_array(image: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{where}: image must be an integer or float array, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"{where}: image must be (..., H, W), got shape {arr.shape}")
    return arr


def diagonal_twins(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split frames into the two diagonal SN2N twins.

    Parameters
    ----------
    image
        ``(..., H, W)`` frames, any real dtype, ``H, W >= 2``.  An odd last row/column is
        dropped.

    Returns
    -------
    a, b
        ``(..., H // 2, W // 2)`` float32.  ``a[i, j] = (x[2i, 2j] + x[2i+1, 2j+1]) / 2``
        (main diagonal), ``b[i, j] = (x[2i, 2j+1] + x[2i+1, 2j]) / 2`` (anti-diagonal).
        Both are centred on the cell centre ``(2i + 0.5, 2j + 0.5)``.
    """
    arr = _as_real_array(image, "diagonal_twins")
    h, w = arr.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(
            f"diagonal_twins: image must be at least 2x2 in its last two axes, got {h}x{w}"
        )
    # float32 before adding: uint16 sums would overflow, and float32 holds them exactly.
    x = arr[..., : h - h % 2, : w - w % 2].astype(np.float32, copy=False)
    a = 0.5 * (x[..., 0::2, 0::2] + x[..., 1::2, 1::2])
    b = 0.5 * (x[..., 0::2, 1::2] + x[..., 1::2, 0::2])
    return a, b


def _upsample_last_axis(x: np.ndarray, exact: bool) -> np.ndarray:
    """Band-limited 2x up-sampling of the last axis, ``(..., m) -> (..., 2m)`` float64.

    The trigonometric interpolant of the mirror-padded signal is evaluated on a grid of step
    ``N / L`` input samples (``L = 2N - 1`` official, ``2N`` exact).
    """
    m = x.shape[-1]
    pad = m // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="symmetric")
    n = m + 2 * pad
    length = 2 * n if exact else 2 * n - 1
    spectrum = np.fft.fft(padded, axis=-1)
    n_pos = (n + 1) // 2  # DC and positive frequencies below Nyquist
    n_neg = (n - 1) // 2  # negative frequencies above -Nyquist
    grown = np.zeros((*x.shape[:-1], length), dtype=np.complex128)
    grown[..., :n_pos] = spectrum[..., :n_pos]
    grown[..., length - n_neg :] = spectrum[..., n - n_neg :]
    freqs = np.zeros(length)
    freqs[:n_pos] = np.arange(n_pos)
    freqs[length - n_neg :] = np.arange(-n_neg, 0)
    if n % 2 == 0:
        # The Nyquist bin is shared by +N/2 and -N/2: split it so the result stays real.
        half = 0.5 * spectrum[..., n // 2]
        grown[..., n_pos] = half
        grown[..., length - n_neg - 1] = half
        freqs[n_pos] = n / 2
        freqs[length - n_neg - 1] = -n / 2
    if exact:
        # Output k of a 2N grid sits at k/2 padded samples, i.e. on or between twin pixels.
        # Twin pixel i is centred on full-res coordinate 2i + 0.5, so full-res pixel j needs
        # the twin at (j - 0.5) / 2: shift the grid by -1/4 twin pixel (a phase ramp).
        grown *= np.exp(2j * np.pi * freqs * (-0.25) / n)
        start = 2 * pad
    else:
        # Official crop (0-based m - 1 for even m); centred on the patch, 0.4 % short in scale.
        start = 2 * pad - 1
    out = np.fft.ifft(grown, axis=-1).real * (length / n)
    return out[..., start : start + 2 * m]


def fourier_upsample(
    image: np.ndarray, mode: Literal["official", "exact"] = "official"
) -> np.ndarray:
    """Fourier (band-limited) 2x up-sampling of twins back to frame pixel size.

    Each of the last two axes is mirror-padded by ``m // 2`` samples on both sides
    ("symmetric": the edge sample repeats), zero-padded in Fourier space, inverse
    transformed, cropped to ``2m`` samples and finally clamped at 0.

    Parameters
    ----------
    image
        ``(..., m, n)`` twins, any real dtype, ``m, n >= 2`` (odd sizes are supported).
    mode
        ``"official"``: as SN2N/aSN2N, zero-pad ``N -> 2N - 1`` (MATLAB ``interpft``) and crop
        from padded index ``2 * (m // 2) - 1``; the output grid is centred on the input but its
        step is ``N / (2N - 1)`` twin pixels, about 0.4 % short of 2x for 64-pixel twins.
        ``"exact"``: zero-pad ``N -> 2N`` and shift the grid by a quarter twin pixel so that
        output pixel ``j`` samples twin coordinate ``(j - 0.5) / 2``, exactly where full-res
        pixel ``j`` lies relative to the twin's 2x2 cell centres.

    Returns
    -------
    numpy.ndarray
        ``(..., 2m, 2n)`` float32, non-negative.
    """
    arr = _as_real_array(image, "fourier_upsample")
    if mode not in ("official", "exact"):
        raise ValueError(f"fourier_upsample: mode must be 'official' or 'exact', got {mode!r}")
    m, n = arr.shape[-2:]
    if m < 2 or n < 2:
        raise ValueError(
            f"fourier_upsample: image must be at least 2x2 in its last two axes, got {m}x{n}"
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError("fourier_upsample: image contains NaN or inf values")
    exact = mode == "exact"
    lead = arr.shape[:-2]
    flat = arr.reshape(-1, m, n)
    out = np.empty((flat.shape[0], 2 * m, 2 * n), dtype=np.float32)
    # The largest intermediate is the (2m, 4n) spectrum of the second pass.
    step = max(1, _CHUNK_SAMPLES // (8 * m * n))
    for i in range(0, flat.shape[0], step):
        chunk = flat[i : i + step].astype(np.float64)
        rows = _upsample_last_axis(np.swapaxes(chunk, -1, -2), exact)
        both = _upsample_last_axis(np.swapaxes(rows, -1, -2), exact)
        out[i : i + step] = np.maximum(both, 0.0)
    return out.reshape(*lead, 2 * m, 2 * n)


def make_twins(
    image: np.ndarray, upsample: UpsampleMode = "official"
) -> tuple[np.ndarray, np.ndarray]:
    """Build the SN2N twin pair of frames.

    Parameters
    ----------
    image
        ``(..., H, W)`` frames, any real dtype.
    upsample
        ``"official"`` or ``"exact"``: Fourier up-sample each twin back to
        ``(..., 2 * (H // 2), 2 * (W // 2))`` (see :func:`fourier_upsample`);
        ``"none"``: keep the half-size twins.

    Returns
    -------
    a, b
        float32 twins (main diagonal, anti-diagonal).
    """
    if upsample not in get_args(UpsampleMode):
        raise ValueError(
            f"make_twins: upsample must be one of {get_args(UpsampleMode)}, got {upsample!r}"
        )
    a, b = diagonal_twins(image)
    if upsample == "none":
        return a, b
    return fourier_upsample(a, upsample), fourier_upsample(b, upsample)


def diagonal_twins_tensor(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch version of :func:`diagonal_twins` for ``(..., H, W)`` float tensors (H, W even).

    Parameters
    ----------
    frames
        ``(..., H, W)`` float tensor with even ``H`` and ``W``, on any device.

    Returns
    -------
    a, b
        ``(..., H // 2, W // 2)`` main- and anti-diagonal means, on the same device.
    """
    h, w = frames.shape[-2:]
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise ValueError(
            f"diagonal_twins_tensor: frames must have even H and W >= 2, got {h}x{w}; "
            "reflect-pad an odd side by one pixel first"
        )
    a = 0.5 * (frames[..., 0::2, 0::2] + frames[..., 1::2, 1::2])
    b = 0.5 * (frames[..., 0::2, 1::2] + frames[..., 1::2, 0::2])
    return a, b


def _upsample_last_axis_tensor(x: torch.Tensor) -> torch.Tensor:
    """Exact band-limited 2x up-sampling of the last axis (the ``exact`` grid), in torch."""
    m = x.shape[-1]
    pad = m // 2
    # "symmetric" mirror padding (the edge sample repeats), as the numpy version.
    padded = torch.cat([x[..., :pad].flip(-1), x, x[..., m - pad :].flip(-1)], dim=-1)
    n = m + 2 * pad
    spectrum = torch.fft.rfft(padded, dim=-1)
    grown = torch.zeros((*x.shape[:-1], n + 1), dtype=spectrum.dtype, device=x.device)
    half = n // 2
    grown[..., :half] = spectrum[..., :half]
    # An even length's Nyquist bin is shared by +N/2 and -N/2: halve it (irfft mirrors it).
    grown[..., half] = spectrum[..., half] * (0.5 if n % 2 == 0 else 1.0)
    # Quarter-twin-pixel shift: output j samples the twin at (j - 0.5) / 2 (see numpy code).
    freqs = torch.arange(n + 1, device=x.device, dtype=torch.float32)
    grown = grown * torch.polar(torch.ones_like(freqs), -0.5 * math.pi * freqs / n)
    out = torch.fft.irfft(grown, n=2 * n, dim=-1) * 2.0
    return out[..., 2 * pad : 2 * pad + 2 * m]


def fourier_upsample_tensor(twins: torch.Tensor) -> torch.Tensor:
    """Exact 2x Fourier up-sampling of ``(..., m, n)`` twins, in torch, without clamping.

    The same interpolant as ``fourier_upsample(mode="exact")`` (mirror padding, zero-padded
    spectrum, quarter-pixel shift) but negative ringing is kept: clamping it at 0 would bias
    background-subtracted data upwards.

    Parameters
    ----------
    twins
        ``(..., m, n)`` float32 tensor, ``m, n >= 2``, on any device.

    Returns
    -------
    torch.Tensor
        ``(..., 2m, 2n)`` float32 on the same device.
    """
    if twins.shape[-1] < 2 or twins.shape[-2] < 2:
        raise ValueError(
            f"fourier_upsample_tensor: twins must be at least 2x2, got {tuple(twins.shape)}"
        )
    x = twins.to(torch.float32)
    rows = _upsample_last_axis_tensor(x)
    return _upsample_last_axis_tensor(rows.transpose(-1, -2)).transpose(-1, -2).contiguous()


def compensate_twin_sampling(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo the low-pass of the diagonal means, so that both twins carry the same signal.

    Relative to sampling the frame at the 2x2 cell centres, the main-diagonal mean ``A``
    multiplies a frequency ``(fy, fx)`` (cycles per frame pixel) by ``cos(pi (fx + fy))``
    and the anti-diagonal mean ``B`` by ``cos(pi (fx - fy))``: a thin filament at (0.11,
    0.19) cycles/px keeps 59 % of its contrast in ``A`` and 97 % in ``B``. The twins
    then differ in content, not only in noise, and a network trained to map one onto the
    other learns a blur. Each twin is divided by its gain (at least ``0.3``) in the Fourier
    domain of its mirror-padded self; the noise stays independent between the twins.

    Parameters
    ----------
    a, b
        ``(..., h, w)`` half-size twins (:func:`diagonal_twins_tensor`), ``h, w >= 2``.

    Returns
    -------
    a, b
        The compensated twins, same shape, float32.
    """
    return _divide_gain(a, +1.0), _divide_gain(b, -1.0)


def _divide_gain(twin: torch.Tensor, sign: float) -> torch.Tensor:
    h, w = twin.shape[-2:]
    ph, pw = h // 2, w // 2
    # Mirror padding ("symmetric") keeps the frame edge from wrapping around in the FFT.
    x = twin.to(torch.float32)
    x = torch.cat([x[..., :ph, :].flip(-2), x, x[..., h - ph :, :].flip(-2)], dim=-2)
    x = torch.cat([x[..., :pw].flip(-1), x, x[..., w - pw :].flip(-1)], dim=-1)
    size = x.shape[-2:]
    # Twin frequencies u (cycles per twin pixel) are u / 2 cycles per frame pixel.
    uy = torch.fft.fftfreq(size[0], device=x.device)[:, None]
    ux = torch.fft.rfftfreq(size[1], device=x.device)[None, :]
    gain = torch.cos(0.5 * math.pi * (ux + sign * uy)).abs().clamp_min(_MIN_TWIN_GAIN)
    y = torch.fft.irfft2(torch.fft.rfft2(x) / gain, s=size)
    return y[..., ph : ph + h, pw : pw + w]


def make_twins_tensor(
    frames: torch.Tensor, *, compensate: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-size twins of whole frames: diagonal split, then exact Fourier up-sampling.

    This is what the ``twin`` recipe trains on and what its inference feeds the network,
    so both see the same band-limited, half-variance noise.

    Parameters
    ----------
    frames
        ``(..., H, W)`` float tensor with even ``H`` and ``W``.
    compensate
        Undo the diagonal means' low-pass first (:func:`compensate_twin_sampling`).

    Returns
    -------
    a, b
        ``(..., H, W)`` float32 up-sampled twins.
    """
    a, b = diagonal_twins_tensor(frames)
    if compensate:
        a, b = compensate_twin_sampling(a, b)
    both = fourier_upsample_tensor(torch.stack([a, b]))
    return both[0], both[1]
