"""The fused CPU step (kernels/cpu_step.c) against the PyTorch calls it replaces, and its fallbacks."""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import SWAConfig, SWAEncoder
from swa_stream.kernels import cpu_step, fused_ring_step, ring_window_attention, ring_write, rotate_qk
from swa_stream.positions import RotaryPositions

pytestmark = pytest.mark.skipif(cpu_step.library() is None, reason=f"fused CPU step: {cpu_step.status()}")


def pytorch_step(qkv, cos, signed_sin, k_ring, v_ring, pending_q, window, end, stream_start):
    """What `SWAEncoder._step_inference` does without the fused step, call by call."""
    batch, t = qkv.shape[:2]
    heads, dim = k_ring.shape[1], k_ring.shape[3]
    qkv = qkv.view(batch, t, 3, heads, dim).permute(2, 0, 3, 1, 4)
    q, k = RotaryPositions.rotate_full(qkv[:2], cos, signed_sin).unbind(0)
    v = qkv[2]
    queries = torch.cat([pending_q, q], dim=2)
    right = pending_q.shape[2]
    held, queries = queries[:, :, t:], queries[:, :, :t]
    out = ring_window_attention(queries, k_ring, v_ring, k, v, window, end=end, stream_start=stream_start,
                                backend="reference")
    assert held.shape[2] == right
    return (out.transpose(1, 2).reshape(batch, t, heads * dim), ring_write(k_ring, k, end + t),
            ring_write(v_ring, v, end + t), held)


@settings(max_examples=150, deadline=None)
@given(batch=st.integers(1, 3), heads=st.integers(1, 4), half=st.sampled_from([1, 2, 3, 8, 18, 32]),
       left=st.integers(0, 40), right=st.integers(0, 9), t=st.integers(1, 24), start=st.integers(0, 10**12),
       received=st.integers(0, 60), seed=st.integers(0, 2**31 - 1))
def test_the_fused_step_equals_the_pytorch_calls(batch, heads, half, left, right, t, start, received, seed):
    """Any window, lookahead, step length and stream position (keys before the stream's start masked, rows
    that see no key zero): outputs to float32 rounding, the ring's keys and values and the held-back
    queries bitwise."""
    dim, capacity = 2 * half, left + right
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, t, 3 * heads * dim, generator=gen)
    k_ring, v_ring = (torch.randn(batch, heads, capacity, dim, generator=gen) for _ in range(2))
    pending_q = torch.randn(batch, heads, right, dim, generator=gen)
    end = start + received  # the first new position; the stream began at `start`
    cos, signed_sin = RotaryPositions(dim).full_tables(end, t, torch.float32)
    with torch.inference_mode():
        fused = fused_ring_step(qkv, cos, signed_sin, k_ring, v_ring, pending_q, (left, right), end=end,
                                stream_start=start)
        expected = pytorch_step(qkv, cos, signed_sin, k_ring, v_ring, pending_q, (left, right), end, start)
    assert fused is not None
    torch.testing.assert_close(fused[0], expected[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(fused[1:], expected[1:], strict=True):
        assert torch.equal(got, want)


def test_it_declines_what_it_does_not_cover():
    qkv, ring, held = torch.zeros(1, 4, 3 * 2 * 4), torch.zeros(1, 2, 8, 4), torch.zeros(1, 2, 0, 4)
    cos, sin = RotaryPositions(4).full_tables(0, 4, torch.float32)
    args = (cos, sin, ring, ring, held, (8, 0))
    assert fused_ring_step(qkv, *args, end=0, stream_start=0) is not None
    assert fused_ring_step(qkv, *args, end=0, stream_start=0, backend="reference") is None
    assert fused_ring_step(qkv.double(), cos, sin, ring.double(), ring.double(), held.double(), (8, 0), end=0,
                           stream_start=0) is None
    long = torch.zeros(1, 200, 3 * 2 * 4)
    cos, sin = RotaryPositions(4).full_tables(0, 200, torch.float32)
    assert fused_ring_step(long, cos, sin, ring, ring, held, (8, 0), end=0, stream_start=0) is None  # blocked path


def test_mismatched_tensors_are_left_to_the_pytorch_path():
    """Whatever the C code would read or write out of bounds, or could not read at all, is declined (None),
    so that the PyTorch path runs and raises its own error: another dtype, device, batch, head count, head
    size or table length for any one tensor, a zero head size, tensors that need gradients, many rows."""
    b, t, h, d, c, r = 2, 3, 2, 4, 6, 1
    good = dict(qkv=torch.randn(b, t, 3 * h * d), k_ring=torch.randn(b, h, c, d), v_ring=torch.randn(b, h, c, d),
                pending_q=torch.randn(b, h, r, d))
    good["cos"], good["signed_sin"] = RotaryPositions(d).full_tables(10, t, torch.float32)

    def run(**changed):
        args = {**good, **changed}
        return fused_ring_step(args["qkv"], args["cos"], args["signed_sin"], args["k_ring"], args["v_ring"],
                               args["pending_q"], (c - r, r), end=10, stream_start=0)

    assert run() is not None
    bad = {"v_ring": [good["v_ring"].half(), torch.randn(1, h, c, d), torch.empty(b, h, c, d, device="meta")],
           "pending_q": [good["pending_q"].half(), torch.randn(1, h, r, d), torch.randn(b, h, r, d + 2)],
           "k_ring": [torch.randn(1, h, c, d), torch.randn(b, h + 1, c, d)],
           "qkv": [torch.randn(b, t, 3 * h * d + 1), torch.randn(b, t, 3 * h * d, dtype=torch.float64),
                   torch.randn(b, t, 3 * h * d, requires_grad=True)],
           "cos": [good["cos"][:1], good["cos"].double()], "signed_sin": [good["signed_sin"][:, :2]]}
    for name, values in bad.items():
        for value in values:
            assert run(**{name: value}) is None, (name, value.shape, value.dtype, value.device)
    zero = dict(qkv=torch.randn(b, t, 0), k_ring=torch.randn(b, h, c, 0), v_ring=torch.randn(b, h, c, 0),
                pending_q=torch.randn(b, h, r, 0), cos=torch.randn(t, 0), signed_sin=torch.randn(t, 0))
    assert run(**zero) is None
    many = dict(qkv=torch.randn(40, t, 3 * h * d), k_ring=torch.randn(40, h, c, d), v_ring=torch.randn(40, h, c, d),
                pending_q=torch.randn(40, h, r, d))
    assert run(**many) is None  # 80 rows of (batch, head): one C thread would lose to torch's calls


def test_a_nan_query_gives_nan_as_torch_does_and_a_row_with_no_key_zeros():
    d, c = 4, 4
    qkv = torch.randn(1, 2, 3 * d)
    qkv[0, 1, :d] = float("nan")  # the second new position's query
    cos, sin = RotaryPositions(d).full_tables(8, 2, torch.float32)
    ring, held = torch.randn(1, 1, c, d), torch.zeros(1, 1, 0, d)
    with torch.inference_mode():
        out = fused_ring_step(qkv, cos, sin, ring, ring, held, (c, 0), end=8, stream_start=0)[0]
        # a stream said to start after these positions: every key is before its start, so no row sees one
        unseen = fused_ring_step(qkv, cos, sin, ring, ring, torch.randn(1, 1, 1, d), (c - 1, 1), end=0,
                                 stream_start=10)[0]
    assert torch.isnan(out[0, 1]).all() and torch.isfinite(out[0, 0]).all()
    assert torch.equal(unseen, torch.zeros_like(unseen))


def test_the_encoder_streams_exactly_with_and_without_it(monkeypatch):
    cfg = SWAConfig(d_model=32, n_heads=4, n_layers=3, window=[(6, 0), (5, 2), (9, 1)])
    torch.manual_seed(0)
    enc = SWAEncoder(cfg).eval()
    x = torch.randn(2, 57, 32)

    def streamed():
        with torch.inference_mode():
            state, outs = enc.init_state(2), []
            for i in range(0, x.shape[1], 4):
                y, state = enc.step(x[:, i : i + 4], state)
                outs.append(y)
            outs.append(enc.flush(state))
            return torch.cat(outs, 1)

    with torch.no_grad():
        offline = enc(x)
    calls, real = [], cpu_step.fused_ring_step

    def counted(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(cpu_step, "fused_ring_step", counted)
    fused = streamed()
    assert calls == [True] * (3 * 15)  # every layer of every step took the fused step
    monkeypatch.setattr(cpu_step, "library", lambda: None)
    plain = streamed()
    torch.testing.assert_close(fused, offline, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, offline, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("env, said, shared", [({"SWA_STREAM_CPU_STEP": "0"}, "off (SWA_STREAM_CPU_STEP=0)", False),
                                               ({"CC": "/nonexistent/cc"}, "unavailable", False),
                                               ({}, "unavailable", True),
                                               ({"CC": "true"}, "unavailable", False),  # "compiles", writes nothing
                                               ({"CC": "cc -O0"}, "loaded", False)])  # CC with its arguments
def test_without_it_the_pytorch_path_runs(tmp_path, env, said, shared):
    """Turned off, with no compiler (a fresh cache, so nothing built before is found), a compiler that writes
    nothing, or a cache folder that others may write to (where they could have planted the library),
    streaming still works and gives the same numbers to rounding; CC may carry arguments."""
    if shared:
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache").chmod(0o775)  # group-writable: anyone in the group could plant the library
    code = ("import torch; from swa_stream import SWAConfig, SWAEncoder; from swa_stream.kernels import cpu_step\n"
            "torch.manual_seed(0)\n"
            "enc = SWAEncoder(SWAConfig(d_model=16, n_heads=2, n_layers=2, window=(5, 1))).eval()\n"
            "x = torch.randn(1, 20, 16)\n"
            "with torch.inference_mode():\n"
            "    s = enc.init_state(1); y, s = enc.step(x, s); y = torch.cat([y, enc.flush(s)], 1)\n"
            "    ref = enc(x)\n"
            "print(cpu_step.status()); print(float((y - ref).abs().max()))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SWA_STREAM_CACHE": str(tmp_path / "cache"), **env})
    assert done.returncode == 0, done.stderr
    status, diff = done.stdout.splitlines()[-2:]
    assert status.startswith(said) and float(diff) < 1e-5
    assert not shared or "writable by others" in status


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), heads=st.integers(1, 4), half=st.sampled_from([1, 4, 8, 18]), t=st.integers(0, 700),
       start=st.sampled_from([0, 5, 10**9, 10**12]), seed=st.integers(0, 2**31 - 1))
def test_the_c_rotation_is_rotate_full_bit_for_bit(batch, heads, half, t, start, seed):
    dim = 2 * half
    rope = RotaryPositions(dim)
    qkv = torch.randn(batch, t, 3 * heads * dim, generator=torch.Generator().manual_seed(seed))
    cos, signed_sin = rope.full_tables(start, t, torch.float32)
    q, k = rotate_qk(qkv, cos, signed_sin, heads)
    want_q, want_k = RotaryPositions.rotate_full(qkv.view(batch, t, 3, heads, dim).permute(2, 0, 3, 1, 4)[:2], cos,
                                                 signed_sin).unbind(0)
    assert q.is_contiguous() and k.is_contiguous() and torch.equal(q, want_q) and torch.equal(k, want_k)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_the_c_rotation_splits_positions_between_threads_bit_for_bit(batch, monkeypatch):
    monkeypatch.setattr(cpu_step, "PARALLEL_ROTATION", 0)  # split even a short run
    threads = torch.get_num_threads()
    rope, heads, dim, t = RotaryPositions(16), 4, 16, 300
    qkv = torch.randn(batch, t, 3 * heads * dim, generator=torch.Generator().manual_seed(batch))
    cos, signed_sin = rope.full_tables(10**9, t, torch.float32)
    try:
        torch.set_num_threads(2)
        q, k = rotate_qk(qkv, cos, signed_sin, heads)
    finally:
        torch.set_num_threads(threads)
    assert cpu_step._POOL is not None and cpu_step._POOL._max_workers >= 2
    want_q, want_k = RotaryPositions.rotate_full(qkv.view(batch, t, 3, heads, dim).permute(2, 0, 3, 1, 4)[:2], cos,
                                                 signed_sin).unbind(0)
    assert torch.equal(q, want_q) and torch.equal(k, want_k)


def test_the_c_rotation_declines_what_it_does_not_read():
    qkv, cos = torch.randn(2, 5, 3 * 2 * 8), torch.randn(5, 8)
    assert rotate_qk(qkv, cos, cos, 2) is not None
    assert rotate_qk(qkv.double(), cos.double(), cos.double(), 2) is None  # float32 only
    assert rotate_qk(qkv.requires_grad_(), cos, cos, 2) is None  # autograd: torch's ops record the graph
    assert rotate_qk(torch.randn(2, 5, 3 * 2 * 7), torch.randn(5, 7), torch.randn(5, 7), 2) is None  # odd head size
    assert rotate_qk(torch.randn(2, 5, 48), torch.randn(4, 8), torch.randn(4, 8), 2) is None  # tables of 4 positions
    assert rotate_qk(torch.randn(2, 5, 50), torch.randn(5, 8), torch.randn(5, 8), 2) is None  # not 3 x heads x D wide


def test_the_c_code_leaves_dual_tensors_and_empty_runs_alone():
    from torch.autograd import forward_ad

    qkv, cos = torch.randn(1, 3, 3 * 8), torch.randn(3, 8)
    ring, held = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 1, 8)
    assert cpu_step._fits(qkv, cos, cos, ring, ring, held)
    with forward_ad.dual_level():  # forward-mode autograd: C would drop the tangent
        dual = forward_ad.make_dual(qkv, torch.ones_like(qkv))
        assert rotate_qk(dual, cos, cos, 1) is None
        assert not cpu_step._fits(dual, cos, cos, ring, ring, held)  # the fused step declines it too
    q, k = rotate_qk(torch.randn(2, 0, 3 * 8), torch.randn(0, 8), torch.randn(0, 8), 1)
    assert q.shape == k.shape == (2, 1, 0, 8)
