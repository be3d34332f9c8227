"""ONNX Runtime sessions and the providers they run on: CPU, or CUDA when it is really usable.

Split from :mod:`lofi_live.model.loader` (which chooses between them per model): finding whether CUDA can be
used here without ONNX Runtime's error spam, and a session's options (one intra-op thread for the live graph).
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

from lofi_live.errors import LofiError

#: ONNX Runtime providers a command may ask for (``--provider``): the one list every command offers.
PROVIDERS = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _fail(where: Path | str, reason: str) -> LofiError:
    return LofiError(f"{where}: {reason}")


def ort_module():
    """onnxruntime, its logger set to errors only."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only: no provider warnings on CPU-only machines
    return ort


@lru_cache(maxsize=1)
def cuda_problem() -> str | None:
    """Why CUDA cannot be used here (``None`` when it can), found without ONNX Runtime's error spam."""
    ort = ort_module()
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    try:
        driver = ctypes.CDLL("libcuda.so.1" if os.name != "nt" else "nvcuda.dll")
    except OSError:
        return "no NVIDIA driver (libcuda) found"
    count = ctypes.c_int(0)
    try:
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return "the NVIDIA driver reports no usable GPU"
    except AttributeError:
        return "the NVIDIA driver library is not usable"
    capi = Path(ort.__file__).parent / "capi"
    library = capi / ("libonnxruntime_providers_cuda.so" if os.name != "nt" else "onnxruntime_providers_cuda.dll")
    try:
        ctypes.CDLL(str(library))
    except OSError as first:
        try:  # CUDA/cuDNN from the nvidia-* pip packages, when installed
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ort.preload_dlls(msvc=False)
            ctypes.CDLL(str(library))
        except Exception:  # noqa: BLE001 - any failure means the same thing: no CUDA
            return f"the CUDA libraries onnxruntime needs are missing ({str(first).split(':')[0]})"
    return None


def session_options(threads: int):
    ort = ort_module()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failed run raises, and our one-line error says why
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads == 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def session(data: bytes, where: Path, provider: str, threads: int):
    """An InferenceSession on ``provider`` ("cpu"/"cuda"); a broken graph becomes a LofiError."""
    ort = ort_module()
    providers = [CUDA, CPU] if provider == "cuda" else [CPU]
    try:
        session = ort.InferenceSession(data, sess_options=session_options(threads), providers=providers)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises several unrelated types
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise _fail(where, f"not a valid ONNX graph, truncated or damaged ({reason})") from None
    if provider == "cuda" and session.get_providers()[0] != CUDA:
        raise _fail(where, "the CUDA provider did not initialise")
    return session
