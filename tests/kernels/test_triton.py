"""The Triton kernels equal the dense reference, forward and backward, run by Triton's interpreter on CPU.

Accuracy follows FlashAttention's rule (kernels/testing.py): against a float64 reference, a kernel's relative
error may be at most twice that of a plain PyTorch computation in the same precision, plus FlashAttention's
rounding allowance. Shapes are small and odd so every block edge is a partial one.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

try:
    from swa_stream.kernels import triton_step, triton_swa
    from swa_stream.kernels.testing import (
        assert_flash_rule,
        attention_reference,
        flash_checks,
        flash_rule,
        plain_attention,
        ring_in_position_order,
    )

    if not triton_swa.INTERPRET:
        raise RuntimeError("the kernels were imported without TRITON_INTERPRET=1")
    _probe = torch.ones(1, 1, 1, 16)
    triton_swa.triton_attention(_probe, _probe, _probe, (0, 0))
except Exception as err:  # noqa: BLE001 - any failure means: no interpreter here
    pytest.skip(f"Triton's interpreter cannot run the kernels on CPU: {err!r}", allow_module_level=True)

triton_attention = triton_swa.triton_attention
triton_ring_attention = triton_step.triton_ring_attention


def make_qkv(batch, heads, n_q, n_k, dim, dtype, seed, transposed_q=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n_q, heads, dim, generator=gen).to(dtype)
    q = q.transpose(1, 2) if transposed_q else q.transpose(1, 2).contiguous()  # the layer's strided view
    k, v = (torch.randn(batch, heads, n_k, dim, generator=gen).to(dtype) for _ in range(2))
    return q, k, v


def check_against_reference(dtype, batch, heads, n_q, n_k, dim, window, seed=0, transposed_q=False, **placement):
    q, k, v = make_qkv(batch, heads, n_q, n_k, dim, dtype, seed, transposed_q)
    do = torch.randn(batch, heads, n_q, dim, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    got, checks = flash_checks(triton_attention, q, k, v, window, grad_out=do, **placement)
    assert all(t.dtype == dtype for t in got)
    assert_flash_rule(checks)
    return got


@pytest.mark.parametrize(
    "n_q, n_k, dim, window, placement",
    [
        pytest.param(37, 37, 16, (5, 0), {}, id="causal-odd-length"),
        pytest.param(100, 100, 32, (40, 3), {}, id="bidirectional-with-full-blocks"),
        pytest.param(50, 50, 16, (200, 300), {"scale": 0.3}, id="window-wider-than-sequence"),
        pytest.param(45, 45, 16, (0, 7), {"k_lengths": torch.tensor([45, 19])}, id="left0-right7-padded"),
        pytest.param(20, 64, 16, (60, 0), {"q_offset": 44, "k_start": 20}, id="chunk-after-cache"),
        pytest.param(40, 70, 16, (36, 8), {"q_offset": 25, "k_start": 3, "k_lengths": torch.tensor([70, 33])},
                     id="offset-start-lengths"),  # wide enough that blocks holding k_start or a length are inside bands
    ],
)
def test_float32_forward_and_backward_match_the_reference(n_q, n_k, dim, window, placement):
    check_against_reference(torch.float32, 2, 2, n_q, n_k, dim, window, transposed_q=True, **placement)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_obeys_the_flash_rule(dtype):
    check_against_reference(dtype, 2, 2, 67, 67, 32, (20, 5), seed=3, k_lengths=torch.tensor([67, 50]))


def test_rows_that_see_no_key_give_zeros_and_zero_gradients():
    # batch 1 has no valid key; in batch 0 the first 10 rows' windows end before k_start
    out, dq, dk, dv = check_against_reference(
        torch.float32, 2, 1, 30, 30, 16, (3, 2), k_start=12, k_lengths=torch.tensor([30, 0])
    )
    assert out[1].abs().max() == 0 and dq[1].abs().max() == 0 and dk[1].abs().max() == 0
    assert out[0, :, :10].abs().max() == 0 and dq[0, :, :10].abs().max() == 0
    assert dk[0, :, :12].abs().max() == 0 and dv[0, :, :12].abs().max() == 0


def test_huge_offsets_and_windows_are_reduced_exactly():
    q, k, v = make_qkv(1, 2, 20, 40, 16, torch.float32, seed=5)
    for window, q_offset in (((10**12 + 3, 0), 10**12), ((10**12, 10**12), 7), ((2, 10**12), -(10**12))):
        assert_flash_rule(flash_checks(triton_attention, q, k, v, window, q_offset=q_offset)[1])


# ---- the streaming step over the ring buffer ---------------------------------------------------------
@pytest.mark.parametrize(
    "window, end, stream_start, n_new, n_q, dtype",
    [
        pytest.param((6, 2), 10**12 + 7, 0, 5, 7, torch.float32, id="huge-end"),
        pytest.param((9, 3), 20, 15, 4, 7, torch.float32, id="stream-starts-inside-ring"),
        pytest.param((5, 0), 3, 0, 1, 1, torch.float32, id="causal-early-stream"),
        pytest.param((0, 0), 5, 0, 3, 3, torch.float32, id="no-ring"),
        pytest.param((4, 4), 10**12 + 7, 10**12 - 1, 0, 4, torch.float32, id="flush-no-new-keys"),
        pytest.param((16, 8), 10**12 + 7, 0, 13, 21, torch.float32, id="ring-spans-blocks"),
        pytest.param((16, 8), 1000, 990, 13, 21, torch.bfloat16, id="bf16"),
    ],
)
def test_ring_step_matches_the_concatenated_reference(window, end, stream_start, n_new, n_q, dtype):
    gen = torch.Generator().manual_seed(end % 1000 + n_new)
    capacity, dim = window[0] + window[1], 16 if n_q < 20 else 32

    def rand(n, spread=1.0):
        return (spread * torch.randn(2, 2, n, dim, generator=gen)).to(dtype)

    q, k_new, v_new = rand(n_q), rand(n_new), rand(n_new)
    # Slots before the stream start hold junk, which must not leak: large values show any weight they get.
    # The keys keep unit scale: keys 30x larger made scores of about 30, whose exp turns one rounding of a
    # score into 1e-6 of the output, so the check judged the host's float32 rounding (it failed on one
    # machine's BLAS, 1.2e-6 against a bound of 7e-7 from torch's luckier 2.9e-7), not the kernel.
    k_ring, v_ring = rand(capacity), rand(capacity, 30.0)
    slots_before = k_ring.clone(), v_ring.clone()
    kw = dict(end=end, stream_start=stream_start)

    got = triton_ring_attention(q, k_ring, v_ring, k_new, v_new, window, **kw)
    keys, values, where = ring_in_position_order(k_ring, v_ring, k_new, v_new, window, **kw)
    precise = attention_reference(q.double(), keys.double(), values.double(), window, **where)
    assert got.shape == q.shape and got.dtype == dtype
    assert_flash_rule(flash_rule(got, precise, plain_attention(q, keys, values, window, **where), "ring step"))
    assert torch.equal(k_ring, slots_before[0]) and torch.equal(v_ring, slots_before[1])  # read in place


def test_ring_placement_reduces_absolute_positions():
    assert triton_step.ring_placement((6, 2), end=10**12 + 7, stream_start=0, n_new=5) == ((10**12 - 1) % 8, 0)
    assert triton_step.ring_placement((9, 3), end=20, stream_start=15, n_new=4) == (8, 7)
    assert triton_step.ring_placement((0, 0), end=5, stream_start=0, n_new=3) == (0, 0)
