"""The kernel tests' own yardsticks (kernels/testing.py): the FlashAttention rule passes a plain run and
fails one with several times its error, and the ring's position order is the definition's."""

import pytest
import torch

from swa_stream.kernels.testing import (
    assert_flash_rule,
    attention_reference,
    flash_checks,
    flash_rule,
    plain_attention,
    ring_in_position_order,
)


def qkv(dtype, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, n, 16, generator=g).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_a_plain_run_passes_and_one_with_five_times_its_error_fails(dtype):
    q, k, v = qkv(dtype)
    precise = attention_reference(q.double(), k.double(), v.double(), (7, 2))
    plain = plain_attention(q, k, v, (7, 2))
    assert flash_rule(plain, precise, plain).ok
    worse = (precise + 5 * (plain.double() - precise)).to(dtype)  # the same direction, five times as far
    check = flash_rule(worse, precise, plain)
    assert not check.ok and check.err > 4 * check.plain_err
    with pytest.raises(AssertionError, match="FlashAttention rule broken: out"):
        assert_flash_rule(check)


def test_errors_are_relative_so_scaling_the_values_changes_nothing():
    q, k, v = qkv(torch.bfloat16)
    checks = [flash_checks(plain_attention, q, k, s * v, (5, 0))[1][0] for s in (1.0, 32.0)]
    assert checks[0].err == pytest.approx(checks[1].err, rel=1e-6)


def test_a_non_finite_kernel_output_fails_whatever_its_error():
    q, k, v = qkv(torch.float32, n=8)
    precise = attention_reference(q.double(), k.double(), v.double(), (2, 0))
    broken = plain_attention(q, k, v, (2, 0))
    broken[0, 0, 0, 0] = float("nan")
    assert not flash_rule(broken, precise, plain_attention(q, k, v, (2, 0))).ok


def test_backward_checks_cover_every_gradient():
    q, k, v = qkv(torch.float16, n=20)
    got, checks = flash_checks(plain_attention, q, k, v, (3, 1), grad_out=torch.randn(2, 2, 20, 16).half())
    assert [c.what for c in checks] == ["out", "dq", "dk", "dv"] and all(c.ok for c in checks)
    assert [t.shape for t in got] == [q.shape] * 4


def test_ring_order_is_position_mod_capacity_oldest_first():
    # capacity 3 after 5 positions: positions 2, 3, 4 sit in slots 2, 0, 1
    ring = torch.arange(3.0).view(1, 1, 3, 1)  # slot s holds the value s
    new = torch.full((1, 1, 2, 1), 9.0)
    keys, values, where = ring_in_position_order(ring, ring, new, new, (2, 1), end=5, stream_start=3)
    assert keys.flatten().tolist() == [2.0, 0.0, 1.0, 9.0, 9.0]
    assert where == dict(q_offset=2, k_start=1)  # position 2 came before the stream's start (3)
