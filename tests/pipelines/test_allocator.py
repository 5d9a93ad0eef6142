"""pipelines/allocator.py: after keep_freed_memory, a tensor of a streaming step's size comes from glibc's
heap, not a mapping of its own, and freeing it keeps its pages for the next step instead of giving them
back to the kernel (which would fault them in again: benchmarks/dna_step.py). Read through glibc's
mallinfo2, in a fresh process each way."""

import json
import subprocess
import sys

import pytest

REPORT = """
import ctypes, json, sys, torch
from swa_stream.pipelines.allocator import keep_freed_memory
class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
a, b = torch.ones(6 * 2**20), torch.ones(6 * 2**20)  # 24 MB each, as a step's projections
mapped = libc.mallinfo2().hblkhd
del a, b
print(json.dumps({"kept": kept, "mapped": mapped, "free_in_heap": libc.mallinfo2().fordblks}))
"""


def report(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", REPORT, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt and mallinfo2 are glibc's")
def test_step_sized_tensors_stay_in_the_heap():
    default, keep = report("default"), report("keep")
    assert default["mapped"] >= 48 * 2**20  # the control: by default each is a mapping, unmapped on free
    assert keep["kept"] is True
    assert keep["mapped"] < 24 * 2**20
    assert keep["free_in_heap"] >= 48 * 2**20  # freed, and kept for reuse
