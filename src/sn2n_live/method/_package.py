"""The ``.sn2n`` model package: one zip file with a JSON manifest and the U-Net weights.

Layout::

    manifest.json   format tag, format_version, U-Net config, normalization policy, resolved
                    tile mode and risk thresholds, twin up-sampling, training statistics,
                    camera offset, default tile, provenance, weights_sha256
    weights.pt      torch state_dict (read back with ``weights_only=True``: no pickled code)

The manifest schema is a set of pydantic models, versioned by ``format_version``. Every way
a package can be unusable (missing, truncated, not a zip, wrong format, newer version,
corrupt weights, weights that do not fit the architecture) raises :class:`ModelPackageError`
with what is wrong, in which file, and how to fix it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from sn2n_live._outputs import open_atomic
from sn2n_live.method._risk import NormalizationPolicy, RiskThresholds, ScaleKind, TileMode
from sn2n_live.method._twins import UpsampleMode
from sn2n_live.method._unet import UNet, UNetConfig

__all__ = [
    "FORMAT_TAG",
    "FORMAT_VERSION",
    "InferenceMode",
    "ModelPackage",
    "ModelPackageError",
    "load_package",
    "save_package",
]

FORMAT_TAG = "sn2n-live-model"
# Version 2 adds the normalization scale and the inference input (frame or twins); a
# version-1 package reads as the published method: "min_clip" and "frame".
FORMAT_VERSION = 2
# What the Denoiser feeds the network: the raw frame, or its two up-sampled twins averaged.
InferenceMode = Literal["frame", "twins"]
_MANIFEST = "manifest.json"
_WEIGHTS = "weights.pt"
# A fixed zip timestamp keeps the file bytes a function of the package's content.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# Which tile modes each training-time policy may resolve to ("dataset" is decided from the
# risk analysis of the training data).
_ALLOWED_MODES: dict[str, tuple[str, ...]] = {
    "dataset": ("global", "local"),
    "global": ("global",),
    "local": ("local",),
    "per_patch": ("per_patch",),
}


class ModelPackageError(ValueError):
    """A model package is missing, corrupt, or incompatible with this sn2n-live."""


class _Normalization(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    policy: NormalizationPolicy
    resolved_mode: TileMode
    thresholds: RiskThresholds
    scale: ScaleKind = "min_clip"


class _Twins(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    upsample: UpsampleMode
    inference: InferenceMode = "frame"
    compensate: bool = False


class _Manifest(BaseModel):
    """Schema of ``manifest.json``, format_version 1."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    format: Literal["sn2n-live-model"]
    format_version: Literal[1, 2]
    unet: UNetConfig
    normalization: _Normalization
    twins: _Twins
    training: dict[str, Any]
    camera_offset_adu: float | None
    default_tile: int
    provenance: dict[str, Any]
    weights_sha256: str


def _weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over each tensor's name, dtype, shape and raw bytes, in state_dict order.

    Hashing the tensor contents (not the torch.save archive) keeps the digest identical
    across torch versions and independent of how the weights were serialized.
    """
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        for part in (
            name.encode(),
            str(tensor.dtype).encode(),
            repr(tuple(tensor.shape)).encode(),
            data.tobytes(),
        ):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def _architecture_mismatch(config: UNetConfig, state_dict: Mapping[str, torch.Tensor]) -> str:
    """Describe how ``state_dict`` differs from ``UNet(config)``; empty if it fits."""
    # The meta device builds the reference shapes without allocating any weights.
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in UNet(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    problems = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k} {got[k]} != {expected[k]}" for k in expected if k in got and got[k] != expected[k]
    ]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
        if items:
            shown = ", ".join(items[:3]) + (
                f", ... ({len(items)} in all)" if len(items) > 3 else ""
            )
            problems.append(f"{label}: {shown}")
    return "; ".join(problems)


@dataclass
class ModelPackage:
    """A trained denoiser: U-Net config and weights plus everything inference needs.

    Attributes
    ----------
    unet : UNetConfig
        Network architecture.
    state_dict : dict of str to torch.Tensor
        Network weights (``UNet.state_dict()``).
    policy : NormalizationPolicy
        Normalization policy chosen for training.
    resolved_mode : TileMode
        Tile normalization the package was trained with and inference applies; ``dataset``
        resolves to ``global`` or ``local`` at training time, other policies to themselves.
    thresholds : RiskThresholds
        Risk rules and clip percentile (also used at inference).
    upsample : UpsampleMode
        Twin up-sampling used in training.
    patch_size : int
        Training patch size; the default inference tile.
    camera_offset_adu : float or None
        Camera offset of the training data, if known.
    scale : {"min_clip", "background"}
        Image-wise normalization scale (``frame_scale``); ``background`` is unclipped.
    inference : {"frame", "twins"}
        Inference input: the raw frame, or both up-sampled twins averaged.
    compensate : bool
        The twins are compensated for the diagonal means' low-pass (twin inference only).
    training : dict
        JSON-serializable training statistics (loss curve, epochs, timings, ...).
    provenance : dict
        JSON-serializable provenance (data_sha256, seed, versions, created, ...).
    """

    unet: UNetConfig
    state_dict: dict[str, torch.Tensor]
    policy: NormalizationPolicy
    resolved_mode: TileMode
    thresholds: RiskThresholds
    upsample: UpsampleMode
    patch_size: int
    camera_offset_adu: float | None = None
    scale: ScaleKind = "min_clip"
    inference: InferenceMode = "frame"
    compensate: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_parts()
        self._check_choices()
        self._check_numbers()

    def _check_parts(self) -> None:
        if not isinstance(self.unet, UNetConfig):
            raise ValueError(f"ModelPackage.unet must be a UNetConfig; got {type(self.unet)}.")
        if not isinstance(self.thresholds, RiskThresholds):
            raise ValueError(
                f"ModelPackage.thresholds must be a RiskThresholds; got {type(self.thresholds)}."
            )
        if not isinstance(self.state_dict, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in self.state_dict.items()
        ):
            raise ValueError("ModelPackage.state_dict must map parameter names to tensors.")

    def _check_choices(self) -> None:
        if self.policy not in _ALLOWED_MODES:
            raise ValueError(
                f"ModelPackage.policy {self.policy!r} is not one of {tuple(_ALLOWED_MODES)}."
            )
        if self.resolved_mode not in _ALLOWED_MODES[self.policy]:
            raise ValueError(
                f"ModelPackage.resolved_mode {self.resolved_mode!r} is not valid for policy "
                f"{self.policy!r}; expected one of {_ALLOWED_MODES[self.policy]}."
            )
        if self.upsample not in get_args(UpsampleMode):
            raise ValueError(
                f"ModelPackage.upsample {self.upsample!r} is not one of {get_args(UpsampleMode)}."
            )
        if self.scale not in get_args(ScaleKind):
            raise ValueError(
                f"ModelPackage.scale {self.scale!r} is not one of {get_args(ScaleKind)}."
            )
        if self.inference not in get_args(InferenceMode):
            raise ValueError(
                f"ModelPackage.inference {self.inference!r} is not one of "
                f"{get_args(InferenceMode)}."
            )
        if self.compensate and self.inference != "twins":
            raise ValueError("ModelPackage.compensate needs inference='twins'.")

    def _check_numbers(self) -> None:
        multiple = self.unet.multiple
        if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int):
            raise ValueError(f"ModelPackage.patch_size must be an int; got {self.patch_size!r}.")
        if self.patch_size <= 0 or self.patch_size % multiple:
            raise ValueError(
                f"ModelPackage.patch_size {self.patch_size} must be a positive multiple of "
                f"{multiple} (= 2**depth of the U-Net) to be usable as the default tile."
            )
        if self.camera_offset_adu is not None and not np.isfinite(self.camera_offset_adu):
            raise ValueError(
                f"ModelPackage.camera_offset_adu must be finite or None; got "
                f"{self.camera_offset_adu!r}."
            )

    @property
    def inference_tile(self) -> int | None:
        """Default inference tile: whole frames (None) or ``patch_size`` tiles.

        A ``twins`` package in ``global`` mode runs whole frames: every tile would use the
        frame's scale anyway, so tiling would only cost compute (50 % overlap: about 4.5x
        the pixels of a 512^2 frame) and add seams. Patch-wise modes and the published
        (``frame``) method keep the Gaussian-blended overlap tiles of Adaptive-SN2N.
        """
        if self.inference == "twins" and self.resolved_mode == "global":
            return None
        return self.patch_size

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the weights (tensor names, dtypes, shapes and bytes; deterministic)."""
        return _weights_sha256(self.state_dict)

    @classmethod
    def untrained(
        cls,
        unet: UNetConfig,
        *,
        mode: TileMode = "global",
        patch_size: int = 64,
        seed: int = 0,
    ) -> ModelPackage:
        """Build a package with seeded random weights, for speed benchmarks and plumbing tests.

        Inference cost does not depend on the weights, so throughput measured with it is
        that of a trained model of the same architecture.
        """
        torch.manual_seed(seed)
        return cls(
            unet=unet,
            state_dict=UNet(unet).state_dict(),
            policy=mode,
            resolved_mode=mode,
            thresholds=RiskThresholds(),
            upsample="official",
            patch_size=patch_size,
            provenance={"untrained": True, "seed": seed},
        )

    def build_model(self, device: torch.device | str = "cpu") -> UNet:
        """Instantiate the U-Net with these weights, in eval mode.

        Parameters
        ----------
        device : torch.device or str
            Where to put the model.

        Returns
        -------
        UNet
            The network in eval mode (BatchNorm uses its running statistics, so outputs do
            not depend on the batch or tile content).

        Raises
        ------
        ModelPackageError
            If ``state_dict`` does not fit the architecture described by ``unet``.
        """
        mismatch = _architecture_mismatch(self.unet, self.state_dict)
        if mismatch:
            raise ModelPackageError(
                f"The weights do not fit the U-Net {self.unet.model_dump()} ({mismatch}). The "
                "state_dict must come from UNet(package.unet); re-export the package from the "
                "training run that produced these weights."
            )
        model = UNet(self.unet)
        model.load_state_dict(self.state_dict, strict=True)
        return model.to(device).eval()


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _manifest_bytes(package: ModelPackage) -> bytes:
    manifest = _Manifest(
        format=FORMAT_TAG,
        format_version=FORMAT_VERSION,
        unet=package.unet,
        normalization=_Normalization(
            policy=package.policy,
            resolved_mode=package.resolved_mode,
            thresholds=package.thresholds,
            scale=package.scale,
        ),
        twins=_Twins(
            upsample=package.upsample, inference=package.inference, compensate=package.compensate
        ),
        training=package.training,
        camera_offset_adu=package.camera_offset_adu,
        default_tile=package.patch_size,
        provenance=package.provenance,
        weights_sha256=package.sha256,
    )
    try:
        text = json.dumps(manifest.model_dump(mode="python"), indent=2, default=_json_default)
    except TypeError as exc:
        raise ValueError(
            f"ModelPackage.training and .provenance must be JSON-serializable ({exc}); store "
            "plain numbers, strings, lists and dicts."
        ) from exc
    return text.encode()


def _zip_write(archive: zipfile.ZipFile, name: str, data: bytes, compress: int) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compress
    archive.writestr(info, data)


def save_package(package: ModelPackage, path: str | os.PathLike[str]) -> Path:
    """Write a package to a ``.sn2n`` file atomically.

    The file is written to a temporary sibling and renamed over ``path``, so a crash never
    leaves a truncated package behind.

    Parameters
    ----------
    package : ModelPackage
        The package to save.
    path : str or os.PathLike
        Destination (conventionally ending in ``.sn2n``); parent folders are created.

    Returns
    -------
    pathlib.Path
        The absolute path written.
    """
    target = Path(path).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest = _manifest_bytes(package)
    weights = io.BytesIO()
    torch.save(
        OrderedDict((k, v.detach().cpu().contiguous()) for k, v in package.state_dict.items()),
        weights,
    )
    # A temporary sibling renamed when complete, with the umask's mode (not mkstemp's 0o600).
    with open_atomic(target, fsync=True) as handle, zipfile.ZipFile(handle, "w") as archive:
        _zip_write(archive, _MANIFEST, manifest, zipfile.ZIP_DEFLATED)
        # float weights barely compress; storing them keeps save/load fast.
        _zip_write(archive, _WEIGHTS, weights.getvalue(), zipfile.ZIP_STORED)
    return target


def _read_members(target: Path) -> tuple[bytes, bytes]:
    try:
        with zipfile.ZipFile(target) as archive:
            names = set(archive.namelist())
            for member in (_MANIFEST, _WEIGHTS):
                if member not in names:
                    raise ModelPackageError(
                        f"{target}: the package has no {member!r} (it contains "
                        f"{sorted(names) or 'nothing'}). It is not a complete sn2n-live model "
                        "package; re-export it with save_package()."
                    )
            return archive.read(_MANIFEST), archive.read(_WEIGHTS)
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as exc:
        raise ModelPackageError(
            f"{target}: not a readable .sn2n model package: it is not a zip archive, or it is "
            f"truncated or corrupt ({exc}). Copy the file again or re-export it from training."
        ) from exc


def _parse_manifest(target: Path, raw: bytes) -> _Manifest:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(
            f"{target}: {_MANIFEST} is not valid JSON ({exc}); the package is corrupt. "
            "Re-export it from training."
        ) from exc
    if not isinstance(data, dict):
        raise ModelPackageError(
            f"{target}: {_MANIFEST} must hold a JSON object; the package is corrupt."
        )
    tag = data.get("format")
    if tag != FORMAT_TAG:
        raise ModelPackageError(
            f"{target}: {_MANIFEST} has format {tag!r}, expected {FORMAT_TAG!r}; this file is "
            "not an sn2n-live model package."
        )
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelPackageError(
            f"{target}: {_MANIFEST} has an invalid format_version {version!r} (expected a "
            "positive integer); the package is corrupt. Re-export it from training."
        )
    if version > FORMAT_VERSION:
        raise ModelPackageError(
            f"{target}: package format_version {version} is newer than this sn2n-live "
            f"supports ({FORMAT_VERSION}). Upgrade sn2n-live to load it."
        )
    try:
        return _Manifest.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ModelPackageError(
            f"{target}: {_MANIFEST} does not match format_version {version} ({details}). "
            "Re-export the package from training."
        ) from exc


def load_package(path: str | os.PathLike[str]) -> ModelPackage:
    """Read and verify a ``.sn2n`` model package.

    Parameters
    ----------
    path : str or os.PathLike
        The package file.

    Returns
    -------
    ModelPackage
        The package, with CPU weights; its ``sha256`` equals the manifest's.

    Raises
    ------
    ModelPackageError
        If the file is missing, not a zip or truncated, lacks a member, has a wrong format
        tag or a newer format_version, fails schema validation, has weights whose hash does
        not match the manifest (corrupt or tampered), or weights that do not fit the U-Net.
    """
    target = _package_file(path)
    raw_manifest, raw_weights = _read_members(target)
    manifest = _parse_manifest(target, raw_manifest)
    state_dict = _read_state_dict(target, raw_weights)
    _verify_weights(target, manifest, state_dict)
    return _package_from(target, manifest, state_dict)


def _package_file(path: str | os.PathLike[str]) -> Path:
    """Return the package's absolute path; refuse a missing file or a directory."""
    target = Path(path).expanduser().absolute()
    if not target.is_file():
        what = "is a directory" if target.is_dir() else "does not exist"
        raise ModelPackageError(
            f"{target} {what}, so it is not a model package; train one with "
            f"`sn2n-live train PILOT.ome.tiff --out {target}`"
        )
    return target


def _read_state_dict(target: Path, raw: bytes) -> dict[str, torch.Tensor]:
    """Decode the weights member into CPU tensors; refuse anything but a state_dict."""
    try:
        state_dict = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for undecodable archives
        raise ModelPackageError(
            f"{target}: {_WEIGHTS} cannot be read as a torch state_dict ({exc}); the package "
            "is corrupt. Re-export it from training."
        ) from exc
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise ModelPackageError(
            f"{target}: {_WEIGHTS} does not hold a state_dict (name -> tensor mapping); the "
            "package is corrupt. Re-export it from training."
        )
    return state_dict


def _verify_weights(target: Path, manifest: _Manifest, state_dict: dict[str, torch.Tensor]) -> None:
    """Refuse weights whose hash differs from the manifest's or that do not fit its U-Net."""
    digest = _weights_sha256(state_dict)
    if digest != manifest.weights_sha256:
        raise ModelPackageError(
            f"{target}: weights hash mismatch ({_WEIGHTS} hashes to {digest[:12]}..., the "
            f"manifest records {manifest.weights_sha256[:12]}...): the weights are corrupt or "
            "were modified. Copy the package again or re-export it from training."
        )
    mismatch = _architecture_mismatch(manifest.unet, state_dict)
    if mismatch:
        raise ModelPackageError(
            f"{target}: {_WEIGHTS} does not fit the U-Net in the manifest "
            f"{manifest.unet.model_dump()} ({mismatch}). Re-export the package from training."
        )


def _package_from(
    target: Path, manifest: _Manifest, state_dict: dict[str, torch.Tensor]
) -> ModelPackage:
    """Build the package from the manifest's settings; its own checks still apply."""
    norm = manifest.normalization
    try:
        return ModelPackage(
            unet=manifest.unet,
            state_dict=state_dict,
            policy=norm.policy,
            resolved_mode=norm.resolved_mode,
            thresholds=norm.thresholds,
            upsample=manifest.twins.upsample,
            patch_size=manifest.default_tile,
            camera_offset_adu=manifest.camera_offset_adu,
            scale=norm.scale,
            inference=manifest.twins.inference,
            compensate=manifest.twins.compensate,
            training=manifest.training,
            provenance=manifest.provenance,
        )
    except ValueError as exc:
        raise ModelPackageError(f"{target}: inconsistent manifest: {exc}") from exc
