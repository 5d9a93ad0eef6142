"""The CPU streaming step's fused attention part and the rotary rotation of a projection
(kernels/cpu_step.c), compiled on first use and loaded with ctypes; without a C compiler the PyTorch path
runs instead, with the same results to rounding (the rotation: the same bits).

The library is built once per source, compiler and flags into the user's cache folder
(`$SWA_STREAM_CACHE`, else `$XDG_CACHE_HOME/swa-stream`, else `~/.cache/swa-stream`), written under a
temporary name and renamed, so processes that start together never load a half-written file; the
cache key holds the source, the flags, the compiler's version and target and the machine, so a cache
shared between machines keeps one build for each. Nothing but the C source next to this file is ever
compiled, and a library is loaded only if this user owns it and its folder and neither is writable by group
or others. `SWA_STREAM_CPU_STEP=0` (or off, false, no; read once per process) turns it off; `CC` names the
compiler, with its arguments (default `cc`); `swa_stream.kernels.cpu_step.status()` says which path runs.
Any failure to build or load means the PyTorch path, never an error.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.autograd import forward_ad

from swa_stream.kernels.ring import SMALL_STEP, ring_placement

SOURCE = Path(__file__).with_name("cpu_step.c")
FLAGS = ("-O3", "-ffp-contract=off", "-fPIC", "-shared")  # no -march=native: the cache may be shared
MOST_ROWS = 64  # batch x heads above which the one-threaded C loop loses to torch's calls (measured)

_LIB = None
_STATUS = "not built yet"
_LOCK = threading.Lock()


def cache_dir() -> Path:
    if os.environ.get("SWA_STREAM_CACHE"):
        return Path(os.environ["SWA_STREAM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "swa-stream"


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=timeout)


def _build(rebuild: bool = False) -> Path:
    """The library's path, compiled first unless this source, compiler, target and flags built it before."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    identity = [_run([*compiler, flag], 30).stdout for flag in ("--version", "-dumpmachine")]
    key = "\0".join([SOURCE.read_text(), *FLAGS, *identity, platform.machine(), platform.system()])
    target = cache_dir() / f"cpu_step-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if target.is_file() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".cpu_step-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = _run([*compiler, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], 120)
        if done.returncode or not os.path.getsize(tmp):
            said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no output"])[-1]
            raise OSError(f"{' '.join(compiler)} failed: {said}")
        os.chmod(tmp, 0o700)
        os.replace(tmp, target)
        for old in target.parent.glob("cpu_step-*.so"):  # builds of older sources (a loaded one stays mapped)
            if old != target:
                old.unlink(missing_ok=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load(path: Path):
    """dlopen the file only if this user owns it and its folder and neither is writable by group or others;
    the checked file itself (an open descriptor, no symlink followed) is what is loaded."""
    folder = path.parent.stat()
    if folder.st_uid != os.getuid() or folder.st_mode & 0o022:
        raise OSError(f"{path.parent}: not owned by this user, or writable by others; not loaded")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise OSError(f"{path}: not owned by this user, or writable by others; not loaded")
        by_fd = f"/proc/self/fd/{fd}"
        return ctypes.CDLL(by_fd if os.path.exists(by_fd) else str(path))
    finally:
        os.close(fd)


def library():
    """The loaded library (`swa_cpu_step`, `swa_cpu_rotate`), or None (then `status()` says why). Built and
    loaded once per process."""
    global _LIB, _STATUS
    if _LIB is not None or _STATUS != "not built yet":
        return _LIB
    with _LOCK:
        if _LIB is not None or _STATUS != "not built yet":
            return _LIB
        if os.environ.get("SWA_STREAM_CPU_STEP", "1").strip().lower() in ("0", "off", "false", "no"):
            _STATUS = f"off (SWA_STREAM_CPU_STEP={os.environ['SWA_STREAM_CPU_STEP']})"
            return None
        try:
            path = _build()
            try:
                lib = _load(path)
            except OSError:  # a cached file that does not load here (truncated, another machine's): once more
                path = _build(rebuild=True)
                lib = _load(path)
        except Exception as err:  # noqa: BLE001 - any failure means the PyTorch path, said by status()
            _STATUS = f"unavailable ({type(err).__name__}: {err}); the PyTorch path runs"
            return None
        ptr, i32 = ctypes.c_void_p, ctypes.c_int
        lib.swa_cpu_step.argtypes = [ptr] * 10 + [i32] * 8 + [ctypes.c_float]
        lib.swa_cpu_step.restype = i32
        lib.swa_cpu_rotate.argtypes = [ptr] * 5 + [i32] * 6
        lib.swa_cpu_rotate.restype = None
        _LIB, _STATUS = lib, f"loaded from {path}"
        return _LIB


def status() -> str:
    library()
    return _STATUS


def _readable(qkv, cos, signed_sin, heads: int, dim: int, *others) -> bool:
    """What both C functions need: qkv (B, T, 3 * heads * dim) and its tables (T, dim), dim even, every
    tensor float32 on the CPU, and no autograd of either mode (C would drop gradients and tangents)."""
    tensors = (qkv, cos, signed_sin, *others)
    return (dim > 0 and dim % 2 == 0 and qkv.shape[2] == 3 * heads * dim
            and cos.shape == signed_sin.shape == (qkv.shape[1], dim)
            and all(x.dtype is torch.float32 and x.is_cpu for x in tensors)
            and not (torch.is_grad_enabled() and any(x.requires_grad for x in tensors))
            and getattr(forward_ad, "_current_level", -1) < 0)


def _fits(qkv, cos, signed_sin, k_ring, v_ring, pending_q) -> bool:
    """`_readable`, the ring and held-back queries shaped as the C step reads them, a short step, and few
    enough rows (batch x heads) for one thread: else the PyTorch path runs (and raises its own errors)."""
    if qkv.dim() != 3 or k_ring.dim() != 4 or pending_q.dim() != 4 or cos.dim() != 2:
        return False
    batch, t, _ = qkv.shape
    _, heads, capacity, dim = k_ring.shape
    return (_readable(qkv, cos, signed_sin, heads, dim, k_ring, v_ring, pending_q) and k_ring.shape[0] == batch
            and v_ring.shape == k_ring.shape and pending_q.shape[:2] == (batch, heads) and pending_q.shape[3] == dim
            and batch * heads <= MOST_ROWS and t * (capacity + t) <= SMALL_STEP)


def fused_ring_step(qkv, cos, signed_sin, k_ring, v_ring, pending_q, end: int, stream_start: int):
    """`swa_stream.kernels.fused_ring_step` where it applies (`_fits`) and the library loads, else None."""
    if not _fits(qkv, cos, signed_sin, k_ring, v_ring, pending_q):
        return None
    lib = library()
    if lib is None:
        return None
    batch, t = qkv.shape[:2]
    _, heads, capacity, dim = k_ring.shape
    right = pending_q.shape[2]
    qkv, cos, signed_sin = qkv.contiguous(), cos.contiguous(), signed_sin.contiguous()
    k_ring, v_ring, pending_q = k_ring.contiguous(), v_ring.contiguous(), pending_q.contiguous()
    new_k, new_v, new_q = torch.empty_like(k_ring), torch.empty_like(v_ring), torch.empty_like(pending_q)
    out = qkv.new_empty(batch, t, heads * dim)
    ring_first, k_start = ring_placement((capacity - right, right), end, stream_start, t)
    if lib.swa_cpu_step(qkv.data_ptr(), cos.data_ptr(), signed_sin.data_ptr(), k_ring.data_ptr(), v_ring.data_ptr(),
          pending_q.data_ptr(), new_q.data_ptr(), new_k.data_ptr(), new_v.data_ptr(), out.data_ptr(), batch, t,
          heads, dim, capacity, right, ring_first, k_start, dim**-0.5):
        raise MemoryError("swa_cpu_step: no scratch memory")
    return out, new_k, new_v, new_q


def rotate_qk(qkv: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, heads: int):
    """`RotaryPositions.rotate_full` of the queries and keys of qkv (B, T, 3 * heads * D), the input
    projection of positions whose tables cos, signed_sin are (T, D), in one pass of C: (q, k), each
    (B, heads, T, D) contiguous, bitwise rotate_full's. None where it does not apply (not float32 on the CPU,
    autograd, other shapes) or the library does not load: the caller then rotates with torch."""
    if qkv.dim() != 3 or cos.dim() != 2 or heads < 1:
        return None
    batch, t, width = qkv.shape
    dim = width // (3 * heads)
    if not _readable(qkv, cos, signed_sin, heads, dim):
        return None
    lib = library()
    if lib is None:
        return None
    q, k = (qkv.new_empty(batch, heads, t, dim) for _ in "qk")
    if not q.numel():
        return q, k
    qkv, cos, signed_sin = qkv.contiguous(), cos.contiguous(), signed_sin.contiguous()
    threads = min(t, torch.get_num_threads()) if q.numel() >= PARALLEL_ROTATION else 1
    cuts = [t * i // threads for i in range(threads + 1)]

    def positions(first: int, last: int) -> None:  # positions first .. last - 1 of every row, without the GIL
        lib.swa_cpu_rotate(qkv.data_ptr(), cos.data_ptr(), signed_sin.data_ptr(), q.data_ptr(), k.data_ptr(), batch, t,
                           heads, dim, first, last)

    if threads == 1:
        positions(0, t)
    else:  # positions split between torch's number of threads: a long rotation is a pass over memory
        list(_pool(threads).map(positions, cuts[:-1], cuts[1:]))
    return q, k


# Rotated values (q's elements) from which `rotate_qk` splits its positions between threads.
PARALLEL_ROTATION = 1 << 16
_POOL: ThreadPoolExecutor | None = None


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL._max_workers < threads:
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="swa-rotate")
        return _POOL
