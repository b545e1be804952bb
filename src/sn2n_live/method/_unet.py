"""The SN2N U-Net: a plain 2-D U-Net with BatchNorm, LeakyReLU and bilinear up-sampling.

Layout (method.md §2.1): an encoder of ``[conv3x3-BN-LeakyReLU] x 2`` blocks separated by
2x2 max-pools with channels ``base * (1, 2, 4, ..., 2**(depth-1))``; a bottleneck that keeps
the deepest encoder width (the bilinear variant halves what would be ``2 * deepest``); a
decoder that up-samples bilinearly (``align_corners=True``), concatenates the skip and runs
a double conv whose middle width is half its input; a 1x1 conv and a sigmoid (``head="sigmoid"``,
the published network) or nothing (``head="linear"``: an unbounded output that can reach
values above the training range and carries no squeeze near 0 or 1).

``forward`` contains no data-dependent control flow and no padding, so the module exports
to ONNX/TensorRT as a static graph. Callers make H and W multiples of :attr:`UNet.multiple`
and use :func:`check_input_shape` to report a bad shape clearly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sn2n_live.config import UNetPreset

__all__ = ["PRESETS", "Head", "UNet", "UNetConfig", "check_input_shape"]

Head = Literal["sigmoid", "linear"]


class UNetConfig(BaseModel):
    """Hyper-parameters of the SN2N U-Net.

    Parameters
    ----------
    depth : int
        Number of 2x down-sampling steps (1..6). Input H and W must be multiples of
        ``2**depth``.
    base_channels : int
        Width of the first encoder block (>= 4); level ``i`` has ``base * 2**i`` channels.
    leaky_slope : float
        Negative slope of the LeakyReLU activations (SN2N uses 0.02).
    head : {"sigmoid", "linear"}
        Output activation: ``"sigmoid"`` (SN2N, output in (0, 1)) or ``"linear"`` (no
        activation; used with unclipped normalization, see the ``twin`` recipe).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    depth: int = Field(default=4, ge=1, le=6)
    base_channels: int = Field(default=64, ge=4)
    leaky_slope: float = Field(default=0.02, ge=0.0, lt=1.0)
    head: Head = "sigmoid"

    @property
    def multiple(self) -> int:
        """Input H and W must be multiples of this (``2**depth``)."""
        return 2**self.depth


PRESETS: dict[UNetPreset, UNetConfig] = {
    # The published SN2N/aSN2N network (17.26 M parameters).
    UNetPreset.PAPER: UNetConfig(),
    # A small network for CPU training and fast live inference.
    UNetPreset.LITE: UNetConfig(depth=3, base_channels=16),
}


def check_input_shape(shape: Sequence[int], multiple: int) -> None:
    """Check that the last two axes of ``shape`` fit a U-Net with the given ``multiple``.

    Parameters
    ----------
    shape : sequence of int
        Shape of the input, ``(..., H, W)``.
    multiple : int
        Required divisor of H and W (``UNet.multiple``).

    Raises
    ------
    ValueError
        If ``shape`` has fewer than two axes, or H or W is not a positive multiple of
        ``multiple``.
    """
    if len(shape) < 2:
        raise ValueError(
            f"U-Net input must have at least 2 axes (..., H, W); got shape {tuple(shape)}."
        )
    height, width = int(shape[-2]), int(shape[-1])
    bad = [
        f"{name}={size}"
        for name, size in (("H", height), ("W", width))
        if size <= 0 or size % multiple
    ]
    if bad:
        raise ValueError(
            f"U-Net input {', '.join(bad)} (shape {tuple(shape)}) is not a positive multiple "
            f"of {multiple} (= 2**depth). Pad or tile the frame to a multiple of {multiple} "
            "before calling the network (the Denoiser does this for you)."
        )


class _DoubleConv(nn.Sequential):
    """``[conv3x3 -> BatchNorm -> LeakyReLU] x 2`` with zero padding 1."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, slope: float):
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.LeakyReLU(slope, inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(slope, inplace=True),
        )


class _Up(nn.Module):
    """Bilinear x2 up-sampling, concatenation with the skip, then a double conv."""

    def __init__(self, in_channels: int, out_channels: int, slope: float):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = _DoubleConv(in_channels, out_channels, in_channels // 2, slope)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """SN2N U-Net mapping ``(N, 1, H, W)`` in [0, 1] to ``(N, 1, H, W)`` in [0, 1].

    Parameters
    ----------
    config : UNetConfig
        Depth, width and activation slope.

    Attributes
    ----------
    config : UNetConfig
        The configuration the network was built from.
    multiple : int
        ``2**depth``; input H and W must be multiples of it (no padding happens inside).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.multiple = config.multiple
        slope = config.leaky_slope
        widths = [config.base_channels * 2**i for i in range(config.depth)]

        self.inc = _DoubleConv(1, widths[0], widths[0], slope)
        # Encoder step i pools and widens to widths[i]; the last step (the bottleneck) keeps
        # the deepest width because the bilinear decoder does not halve channels itself.
        down_widths = [*widths[1:], widths[-1]]
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _DoubleConv(c_in, c_out, c_out, slope))
            for c_in, c_out in zip(widths, down_widths, strict=True)
        )
        # Decoder level i receives widths[i] up-sampled channels plus a widths[i] skip and
        # outputs widths[i-1] (the finest level keeps widths[0]).
        self.ups = nn.ModuleList(
            _Up(2 * widths[i], widths[max(i - 1, 0)], slope) for i in reversed(range(config.depth))
        )
        self.outc = nn.Conv2d(widths[0], 1, kernel_size=1)
        self.sigmoid_head = config.head == "sigmoid"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 1, H, W)`` float32, normalized (to [0, 1] for the sigmoid head); H and W
            multiples of :attr:`multiple` (see :func:`check_input_shape`).

        Returns
        -------
        torch.Tensor
            ``(N, 1, H, W)``, in (0, 1) for the sigmoid head.
        """
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        y = self.outc(y)
        return torch.sigmoid(y) if self.sigmoid_head else y
