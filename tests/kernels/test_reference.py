"""The dense reference is itself checked against the definition, written as plain loops."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.kernels import sliding_window_attention


def by_definition(q, k, v, window, q_offset, k_start, k_lengths):
    left, right = window
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i in range(q.shape[2]):
                pos = q_offset + i
                keys = [j for j in range(k.shape[2]) if pos - left <= j <= pos + right and k_start <= j < k_lengths[b]]
                if not keys:
                    continue
                scores = torch.stack([q[b, h, i] @ k[b, h, j] / math.sqrt(q.shape[-1]) for j in keys])
                out[b, h, i] = (scores.softmax(0)[:, None] * v[b, h, keys]).sum(0)
    return out


@settings(deadline=None, max_examples=40)
@given(
    n_q=st.integers(1, 9),
    n_k=st.integers(1, 14),
    window=st.tuples(st.integers(0, 6), st.integers(0, 6)),
    q_offset=st.integers(0, 8),
    k_start=st.integers(0, 4),
    data=st.data(),
)
def test_reference_and_torch_backends_match_the_definition(n_q, n_k, window, q_offset, k_start, data):
    gen = torch.Generator().manual_seed(n_q * 100 + n_k)
    q, k, v = (torch.randn(2, 2, n, 4, generator=gen, dtype=torch.float64) for n in (n_q, n_k, n_k))
    k_lengths = torch.tensor([n_k, data.draw(st.integers(0, n_k))])
    expected = by_definition(q, k, v, window, q_offset, k_start, k_lengths)
    for backend in ("reference", "torch"):
        got = sliding_window_attention(
            q, k, v, window, q_offset=q_offset, k_start=k_start, k_lengths=k_lengths, backend=backend
        )
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_unknown_backend_is_named():
    q = torch.randn(1, 1, 4, 8)
    try:
        sliding_window_attention(q, q, q, (2, 0), backend="cuda-magic")
    except ValueError as err:
        assert "backend" in str(err) and "cuda-magic" in str(err)
    else:
        raise AssertionError("expected ValueError")
