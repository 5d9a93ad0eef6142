"""The CPU streaming step's fused attention part (kernels/cpu_step.c), compiled on first use and loaded
with ctypes; without a C compiler the PyTorch path runs instead, with the same results to rounding.

The library is built once per source, compiler and flags into the user's cache folder
(`$SWA_STREAM_CACHE`, else `$XDG_CACHE_HOME/swa-stream`, else `~/.cache/swa-stream`), written under a
temporary name and renamed, so processes that start together never load a half-written file. Nothing
but the C source next to this file is ever compiled, and a library is loaded only if this user owns it and
its folder and neither is writable by everyone. `SWA_STREAM_CPU_STEP=0` turns it off; `CC` names the
compiler (default `cc`); `swa_stream.kernels.cpu_step.status()` says which path runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch

from swa_stream.kernels.ring import ring_placement

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
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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


def _check_owner(path: Path) -> None:
    """Load only a library this user built: the file and its folder owned by them and not writable by
    everyone (a planted library in a shared cache is refused, and the PyTorch path runs)."""
    for p in (path, path.parent):
        info = p.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o002:
            raise OSError(f"{p}: not owned by this user, or writable by everyone; not loaded")


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
        _check_owner(path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as err:
        _STATUS = f"unavailable ({err}); the PyTorch path runs"
        return None
    fn = lib.swa_cpu_step
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    fn.argtypes = [ptr] * 10 + [i32] * 8 + [ctypes.c_float]
    fn.restype = i32
    _LIB, _STATUS = fn, f"loaded from {path}"
    return _LIB


def status() -> str:
    library()
    return _STATUS


def fused_ring_step(qkv, cos, signed_sin, k_ring, v_ring, pending_q, end: int, stream_start: int):
    """`swa_stream.kernels.fused_ring_step` once it applies: float32 CPU tensors, an even head size, a short
    step and the library loaded (else None)."""
    fn = library()
    batch, t = qkv.shape[:2]
    _, heads, capacity, dim = k_ring.shape
    if (fn is None or qkv.dtype != torch.float32 or not qkv.is_cpu or k_ring.dtype != torch.float32 or dim % 2
            or t * (capacity + t) > SMALL_STEP):
        return None
    right = pending_q.shape[2]
    qkv, cos, signed_sin = qkv.contiguous(), cos.contiguous(), signed_sin.contiguous()
    k_ring, v_ring, pending_q = k_ring.contiguous(), v_ring.contiguous(), pending_q.contiguous()
    new_k, new_v, new_q = torch.empty_like(k_ring), torch.empty_like(v_ring), torch.empty_like(pending_q)
    out = qkv.new_empty(batch, t, heads * dim)
    ring_first, k_start = ring_placement((capacity - right, right), end, stream_start, t)
    if fn(qkv.data_ptr(), cos.data_ptr(), signed_sin.data_ptr(), k_ring.data_ptr(), v_ring.data_ptr(),
          pending_q.data_ptr(), new_q.data_ptr(), new_k.data_ptr(), new_v.data_ptr(), out.data_ptr(), batch, t,
          heads, dim, capacity, right, ring_first, k_start, dim**-0.5):
        raise MemoryError("swa_cpu_step: no scratch memory")
    return out, new_k, new_v, new_q
