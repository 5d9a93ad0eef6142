"""The CPU streaming step's fused attention part (kernels/cpu_step.c), compiled on first use and loaded
with ctypes; without a C compiler the PyTorch path runs instead, with the same results to rounding.

The library is built once per source, compiler and flags into the user's cache folder
(`$SWA_STREAM_CACHE`, else `$XDG_CACHE_HOME/swa-stream`, else `~/.cache/swa-stream`), written under a
temporary name and renamed, so processes that start together never load a half-written file. Nothing
but the C source next to this file is ever compiled or loaded. `SWA_STREAM_CPU_STEP=0` turns it off;
`CC` names the compiler (default `cc`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_step.c")
FLAGS = ("-O3", "-ffp-contract=off", "-fPIC", "-shared")  # no -march=native: the cache may be shared
SMALL_STEP = 8192  # (query, key) pairs per row and head above which the step takes the blocked PyTorch path

_LIB = None
_STATUS = "not built yet"


def cache_dir() -> Path:
    if os.environ.get("SWA_STREAM_CACHE"):
        return Path(os.environ["SWA_STREAM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "swa-stream"


def _build() -> Path:
    compiler = os.environ.get("CC", "cc")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + version.encode()).hexdigest()[:16]
    target = cache_dir() / f"cpu_step-{digest}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cpu_step-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True,
                              timeout=120)
        if done.returncode:
            raise OSError(f"{compiler} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library():
    """The loaded library, or None (then `status()` says why)."""
    global _LIB, _STATUS
    if _LIB is not None or _STATUS != "not built yet":
        return _LIB
    if os.environ.get("SWA_STREAM_CPU_STEP", "1") == "0":
        _STATUS = "off (SWA_STREAM_CPU_STEP=0)"
        return None
    try:
        path = _build()
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as err:
        _STATUS = f"unavailable ({err}); the PyTorch path runs"
        return None
    fn = lib.swa_cpu_step
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    fn.argtypes = [ptr] * 6 + [i32] + [ptr] * 6 + [i32] * 6 + [ctypes.c_float]
    fn.restype = i32
    _LIB, _STATUS = fn, f"loaded from {path}"
    return _LIB


def status() -> str:
    library()
    return _STATUS


def fits(qkv: torch.Tensor, k_ring: torch.Tensor, t: int, backend: str) -> bool:
    """Can the fused step take this layer's step: float32 CPU tensors, an even head size, a short step."""
    return (backend in ("auto", "torch") and qkv.device.type == "cpu" and qkv.dtype == torch.float32
            and k_ring.dtype == torch.float32 and k_ring.shape[-1] % 2 == 0
            and t * (k_ring.shape[2] + t) <= SMALL_STEP and library() is not None)


def fused_ring_step(qkv, cos, signed_sin, k_ring, v_ring, pending_q, slots, bias):
    """qkv (B, T, 3 * H * D) the layer's projection of T new positions (rows at one position), the rotary
    tables (T, D), the ring (B, H, C, D) before the step, the held-back rotated queries (B, H, R, D), the
    ring slots of the newest min(C, T) positions and the additive mask (T, C + T) over (ring slots, new
    keys) -> (attention outputs (B, T, H * D) of the T queries answered, the new ring's keys and values,
    the new held-back queries)."""
    batch, t = qkv.shape[:2]
    _, heads, capacity, dim = k_ring.shape
    right = pending_q.shape[2]
    qkv, cos, signed_sin, k_ring, v_ring, pending_q, bias = (
        x.contiguous() for x in (qkv, cos, signed_sin, k_ring, v_ring, pending_q, bias))
    slots = slots.to(torch.int64).contiguous()
    new_k, new_v, new_q = torch.empty_like(k_ring), torch.empty_like(v_ring), torch.empty_like(pending_q)
    out = qkv.new_empty(batch, t, heads * dim)
    if _LIB(qkv.data_ptr(), cos.data_ptr(), signed_sin.data_ptr(), k_ring.data_ptr(), v_ring.data_ptr(),
            slots.data_ptr(), slots.numel(), pending_q.data_ptr(), new_q.data_ptr(), bias.data_ptr(),
            new_k.data_ptr(), new_v.data_ptr(), out.data_ptr(), batch, t, heads, dim, capacity, right,
            dim**-0.5):
        raise MemoryError("swa_cpu_step: no scratch memory")
    return out, new_k, new_v, new_q
