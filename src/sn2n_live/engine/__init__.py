"""Inference engines behind one interface: torch (CPU/CUDA), ONNX Runtime and TensorRT.

Every engine is a callable mapping a float32 ``(B, 1, H, W)`` batch in [0, 1] on its
``device`` to the same shape, and can be passed to ``Denoiser(package, runner=engine)``.
:func:`select_engine` picks the best one available here; :func:`available_backends` says
what can run and why not.
"""

from sn2n_live.engine._base import (
    PRECISIONS,
    BackendStatus,
    BackendUnavailable,
    Engine,
    InputShapes,
    Precision,
)
from sn2n_live.engine._onnx import OnnxModelInfo, export_onnx, read_onnx_info
from sn2n_live.engine._onnxruntime import OnnxRuntimeEngine
from sn2n_live.engine._plan_cache import (
    CachedPlan,
    PlanMetadata,
    StalePlanError,
    list_cached_plans,
    plan_cache_dir,
    plan_cache_key,
)
from sn2n_live.engine._select import (
    AUTO_ORDER,
    BACKENDS,
    BackendChoice,
    BackendName,
    available_backends,
    build_denoiser,
    choose_backend,
    select_engine,
)
from sn2n_live.engine._tensorrt import TENSORRT_INSTALL_HINT, TensorRTEngine, build_engine_plan
from sn2n_live.engine._torch import TorchEngine

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "PRECISIONS",
    "TENSORRT_INSTALL_HINT",
    "BackendChoice",
    "BackendName",
    "BackendStatus",
    "BackendUnavailable",
    "CachedPlan",
    "Engine",
    "InputShapes",
    "OnnxModelInfo",
    "OnnxRuntimeEngine",
    "PlanMetadata",
    "Precision",
    "StalePlanError",
    "TensorRTEngine",
    "TorchEngine",
    "available_backends",
    "build_denoiser",
    "build_engine_plan",
    "choose_backend",
    "export_onnx",
    "list_cached_plans",
    "plan_cache_dir",
    "plan_cache_key",
    "read_onnx_info",
    "select_engine",
]
