"""Keep freed memory for reuse in long chunked runs (score-fasta, call-genes), on glibc.

A streaming step over 2 x 16,384 positions allocates and frees the same tensors of 4-25 MB every step.
By default glibc hands blocks over its mmap threshold back to the kernel on free, and trims the heap's top
once more than twice that threshold lies free there, so each step's first write to every such tensor faults
its pages in again: 4,000-27,000 page faults a step and 36-76 ms of system time (21-28 ms after), most
visible as `aten::copy_` of a linear's bias into its fresh output (docs/dna.md, "Scoring a whole
chromosome"). Raising both thresholds keeps those blocks in the heap, where the next step reuses them
without a fault. The heap then also keeps blocks that a later size cannot reuse: the whole K-12 scan's
peak rose by 10-60 MB; a small input's is unchanged.

`mallopt` takes effect for the rest of the process; a C library without it (musl, macOS) is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit): larger blocks stay mmap'ed
TRIM_THRESHOLD = 1 * 2**30  # free memory at the heap's top kept up to this much


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds as above; True if it did (on Linux with glibc), else False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
