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
