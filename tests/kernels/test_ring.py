"""The ring buffer's ragged arithmetic against a plain per-row, per-position reference."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.kernels.ring import ring_attention_torch, ring_read, ring_write


@st.composite
def ragged_write(draw):
    capacity = draw(st.integers(1, 9))
    batch = draw(st.integers(1, 4))
    t = draw(st.integers(0, 2 * capacity + 2))
    counts = [draw(st.integers(0, t)) for _ in range(batch)]
    ends = [draw(st.integers(0, 10**9)) + c for c in counts]
    return capacity, t, counts, ends


@settings(deadline=None, max_examples=80)
@given(case=ragged_write())
def test_ragged_ring_write_keeps_each_rows_newest_positions(case):
    capacity, t, counts, ends = case
    ring = torch.randn(len(counts), 2, capacity, 3)
    rows = torch.randn(len(counts), 2, t, 3)
    got = ring_write(ring, rows, ends, counts)
    expected = ring.clone()
    for b, (end, count) in enumerate(zip(ends, counts, strict=True)):
        for j in range(count):  # row j is position end - count + j, in order: the newest write wins
            expected[b, :, (end - count + j) % capacity] = rows[b, :, j]
    assert torch.equal(got, expected)


@settings(deadline=None, max_examples=60)
@given(case=ragged_write(), left=st.integers(0, 6), data=st.data())
def test_ragged_ring_attention_in_slot_order_equals_the_dense_definition(case, left, data):
    capacity, t, counts, ends = case
    right = capacity - left if capacity >= left else 0
    left = capacity - right
    starts = [data.draw(st.integers(max(0, e - 3 * capacity), e)) for e in ends]
    batch = len(counts)
    q = torch.randn(batch, 2, t, 4)
    k_ring, v_ring = torch.randn(batch, 2, capacity, 4), torch.randn(batch, 2, capacity, 4)
    k_new, v_new = torch.randn(batch, 2, t, 4), torch.randn(batch, 2, t, 4)
    placement = dict(end=ends, stream_start=starts, new_counts=counts)
    got = ring_attention_torch(q, k_ring, v_ring, k_new, v_new, (left, right), **placement)
    expected = ring_attention_torch(q, k_ring, v_ring, k_new, v_new, (left, right), dense=True, **placement)
    for b, c in enumerate(counts):  # queries past a row's new keys are padding
        torch.testing.assert_close(got[b, :, : max(0, c - right) + right], expected[b, :, : max(0, c - right) + right],
                                   rtol=0, atol=1e-5)
    assert ring_read(k_ring, ends).shape == k_ring.shape
