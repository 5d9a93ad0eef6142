"""Rotary positions depend only on relative distance, exactly, at any absolute position."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.config import ROPE_PERIOD
from swa_stream.positions import RotaryPositions, rope_harmonics


def test_harmonics_follow_the_usual_rope_spectrum():
    n = rope_harmonics(64, 10000.0).double()
    freq = n * 2 * torch.pi / ROPE_PERIOD
    expected = 10000.0 ** (-torch.arange(32, dtype=torch.float64) * 2 / 64)
    assert torch.allclose(freq, expected, rtol=5e-3)


def test_tables_repeat_exactly_every_period():
    rope = RotaryPositions(16)
    a = rope.tables(123, 50, torch.float32)
    b = rope.tables(123 + 7 * ROPE_PERIOD, 50, torch.float32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@settings(deadline=None, max_examples=25)
@given(
    offset=st.sampled_from([0, 1, 10**6, 10**9, 10**12, 2**62]),
    i=st.integers(0, 300),
    j=st.integers(0, 300),
)
def test_scores_depend_only_on_relative_distance(offset, i, j):
    rope = RotaryPositions(32)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 32, generator=gen)

    def score(start):
        cos, sin = rope.tables(start, 301, torch.float32)
        qr = rope.rotate(q.expand(301, 32), cos, sin)[i]
        kr = rope.rotate(k.expand(301, 32), cos, sin)[j]
        return (qr * kr).sum()

    assert torch.allclose(score(offset), score(0), atol=1e-5)


@settings(deadline=None, max_examples=12)
@given(batch=st.integers(1, 3), heads=st.integers(1, 4), length=st.integers(1, 3000),
       head_dim=st.sampled_from([8, 16, 36]), start=st.sampled_from([0, 7, 10**9]))
def test_long_rotations_take_a_contiguous_copy_with_the_same_bits_and_gradients(batch, heads, length, head_dim, start):
    """rotate_full copies a long strided input contiguous before rotating: the same products and sums as the
    short path's on the view, bit for bit (values and gradients), and the same numbers as `rotate`."""
    import swa_stream.positions as positions

    rope = RotaryPositions(head_dim)
    qkv = torch.randn(batch * length, 3 * heads * head_dim, dtype=torch.float64).float().requires_grad_()
    x = qkv.view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)[:2]  # as SWAAttention.project does
    cos, signed_sin = rope.full_tables(start, length, torch.float32)
    kept = positions._CONTIGUOUS_ROTATION
    try:
        positions._CONTIGUOUS_ROTATION = 0  # every size: the contiguous path
        fast = RotaryPositions.rotate_full(x, cos, signed_sin)
        positions._CONTIGUOUS_ROTATION = 1 << 62  # every size: the view path
        plain = RotaryPositions.rotate_full(x, cos, signed_sin)
    finally:
        positions._CONTIGUOUS_ROTATION = kept
    assert fast.is_contiguous() and torch.equal(fast, plain)
    weight = torch.randn_like(plain)
    (g_fast,), (g_plain,) = (torch.autograd.grad((y * weight).sum(), qkv) for y in (fast, plain))
    assert torch.equal(g_fast, g_plain)
    torch.testing.assert_close(fast, rope.rotate(x, *rope.tables(start, length, torch.float32)), rtol=0, atol=1e-6)
