"""Key/value ring buffers: position p lives in slot p % C. Every "position mod capacity" in the project
is here (the Triton step kernel takes its placement from `ring_placement`), in the style of
mistral-inference's rotating buffer: small functions a reader can check by hand.

Positions may be one integer for the whole batch, or a list with one per row (a ragged batch, where every
row is its own stream); a list whose entries agree takes the one-integer path.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from swa_stream.kernels.cpu import blocked_attention
from swa_stream.kernels.reference import attention_reference

# Below this many (query, key) pairs a streaming step attends with one masked SDPA call: a few queries
# against a ring of tens of keys, where the blocked path's planning costs more than the arithmetic.
SMALL_STEP = 8192


def _one(values) -> int | None:
    """The common value of an int or a per-row list, or None if the rows differ."""
    if isinstance(values, int):
        return values
    return values[0] if all(v == values[0] for v in values) else None


_SLOTS: dict = {}  # (first mod C, count, C, device, inference mode) -> slots: a few recur all stream long
_SLOTS_KEPT = 1024


def ring_slots(first_position, count: int, capacity: int, device) -> torch.Tensor:
    """Slots of positions first .. first + count - 1: (count,) for one first position, (B, count) for a list."""
    if isinstance(first_position, int):
        key = (first_position % capacity, count, capacity, device, torch.is_inference_mode_enabled())
        slots = _SLOTS.get(key)
        if slots is None:
            if len(_SLOTS) >= _SLOTS_KEPT:
                _SLOTS.clear()
            slots = _SLOTS[key] = (key[0] + torch.arange(count, device=device)) % capacity
        return slots
    offsets = torch.arange(count, device=device)
    firsts = torch.tensor([p % capacity for p in first_position], device=device)
    return (firsts[:, None] + offsets) % capacity


def _rows_along_2(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, D) indexed along dim 2 by (n,) or per row by (B, n)."""
    if index.dim() == 1:
        return x.index_select(2, index)
    return x.gather(2, index[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))


def ring_read(ring: torch.Tensor, end) -> torch.Tensor:
    """The ring (B, H, C, D) in position order: rows for positions end - C .. end - 1 (end per row or one)."""
    capacity = ring.shape[2]
    if capacity == 0:
        return ring
    first = _one(end)
    first = [e - capacity for e in end] if first is None else first - capacity
    return _rows_along_2(ring, ring_slots(first, capacity, capacity, ring.device))


def ring_write(ring: torch.Tensor, rows: torch.Tensor, end, counts: list[int] | None = None) -> torch.Tensor:
    """A new ring holding the new rows (B, H, t, D) over the old one. One `end`: rows are positions
    end - t .. end - 1. Per row: row b's first counts[b] rows are positions end[b] - counts[b] .. end[b] - 1
    (the rest is padding)."""
    capacity, t = ring.shape[2], rows.shape[2]
    one = _one(end)
    if counts is None or (one is not None and all(c == t for c in counts)):
        keep = min(capacity, t)
        if keep == 0:
            return ring
        one = one if one is not None else end[0]
        return ring.index_copy(2, ring_slots(one - keep, keep, capacity, ring.device), rows[:, :, t - keep :])
    if capacity == 0 or t == 0:
        return ring
    # Ragged: slot s of row b takes the newest position p <= end - 1 with p = s mod C, which is new row
    # j = p - (end - count) = count - 1 - ((end - 1 - s) mod C) if that is >= 0, else keeps its old row.
    slot = torch.arange(capacity, device=ring.device)
    ends = torch.tensor(end, device=ring.device)[:, None]
    counts_t = torch.tensor(counts, device=ring.device)[:, None]
    j = counts_t - 1 - (ends - 1 - slot[None]) % capacity
    fresh = _rows_along_2(rows, j.clamp(min=0))
    return torch.where((j >= 0)[:, None, :, None], fresh, ring)


def ring_placement(window: tuple[int, int], end: int, stream_start: int, n_new: int) -> tuple[int, int]:
    """(slot of the oldest ring position, first valid virtual key), both small, from absolute positions:
    what the Triton ring kernel needs to read the ring in place."""
    capacity = int(window[0]) + int(window[1])
    ring_first = (end - capacity) % capacity if capacity else 0
    k_start = min(max(stream_start - (end - capacity), 0), capacity + n_new)
    return ring_first, k_start


def step_mask(n_q: int, n_k: int, window, q_offset: int, k_start: list[int], k_lengths: list[int],
              device) -> torch.Tensor:
    """See `_step_mask`; one mask for rows that agree (steady state: every step has the same few masks)."""
    if len(set(k_start)) == 1 and len(set(k_lengths)) == 1:
        k_start, k_lengths = k_start[:1], k_lengths[:1]
    if len(k_start) > 8:
        return _step_mask(n_q, n_k, tuple(window), q_offset, tuple(k_start), tuple(k_lengths), device)
    return _cached_step_mask(n_q, n_k, tuple(window), q_offset, tuple(k_start), tuple(k_lengths),
                             torch.device(device), torch.is_inference_mode_enabled())


@functools.lru_cache(maxsize=512)
def _cached_step_mask(n_q, n_k, window, q_offset, k_start, k_lengths, device, inference) -> torch.Tensor:
    return _step_mask(n_q, n_k, window, q_offset, k_start, k_lengths, device)


def _step_mask(n_q: int, n_k: int, window, q_offset: int, k_start, k_lengths, device) -> torch.Tensor:
    """(B, 1, Nq, Nk) bool: may query i of row b see key j? A query that sees no key (padding, or a
    position before its stream began) sees every key instead, so no row of an SDPA mask is empty; the
    encoder never reads those rows. (A real query always sees its own key.)"""
    qi = torch.arange(n_q, device=device)[:, None] + q_offset
    kj = torch.arange(n_k, device=device)[None, :]
    band = (kj >= qi - window[0]) & (kj <= qi + window[1])
    lo = torch.tensor(k_start, device=device).view(-1, 1, 1)
    hi = torch.tensor(k_lengths, device=device).view(-1, 1, 1)
    mask = band[None] & (kj[None] >= lo) & (kj[None] < hi)
    return (mask | ~mask.any(-1, keepdim=True))[:, None]


def _with_new(ring: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """The ring as it lies (slot order) followed by the new rows: the keys or values a short step attends."""
    return torch.cat([ring, new], dim=2) if ring.shape[2] else new


def _slot_order(mask: torch.Tensor, ends: list[int], capacity: int, t: int) -> torch.Tensor:
    """A (B or 1, 1, Nq, C + t) mask over keys in position order -> the same over keys in slot order: slot
    j < C of row b holds the key whose position-order index is (j - end_b) mod C; new keys stay in place."""
    device = mask.device
    if capacity == 0:
        return mask
    new = torch.arange(capacity, capacity + t, device=device)
    first = _one([e % capacity for e in ends])
    if first is not None:  # every row's ring turned alike: one column order
        return mask.index_select(-1, torch.cat([(torch.arange(capacity, device=device) - first) % capacity, new]))
    slots = torch.arange(capacity, device=device)[None] - torch.tensor(ends, device=device)[:, None]
    order = torch.cat([slots % capacity, new.expand(len(ends), t)], dim=1)  # (B, C + t)
    mask = mask.expand(len(ends), *mask.shape[1:])
    return mask.gather(-1, order[:, None, None, :].expand(-1, 1, mask.shape[2], -1))


def ring_attention_small(q, k_ring, v_ring, k_new, v_new, window, *, end: int, stream_start: int, scale=None):
    """`ring_attention_torch` for one position shared by every row. A short step attends the ring as it
    lies, in slot order, with the mask's columns permuted to match (a softmax does not care in which order
    its keys come), so the ring is never unrolled; the masks recur every few steps and are looked up. Long
    steps unroll the ring for the blocked kernel."""
    capacity, t = k_ring.shape[2], k_new.shape[2]
    if q.shape[2] * (capacity + t) > SMALL_STEP:
        return ring_attention_torch(q, k_ring, v_ring, k_new, v_new, window, end=end, stream_start=stream_start,
                                    scale=scale)
    k_start = max(0, stream_start - (end - capacity))
    bias = _slot_bias(q.shape[2], capacity, t, window[0], window[1], end % capacity if capacity else 0, k_start,
                      q.device, q.dtype, torch.is_inference_mode_enabled())
    return F.scaled_dot_product_attention(q, _with_new(k_ring, k_new), _with_new(v_ring, v_new), attn_mask=bias,
                                          scale=scale)


@functools.lru_cache(maxsize=512)
def _slot_bias(n_q: int, capacity: int, t: int, left: int, right: int, end_slot: int, k_start: int, device, dtype,
               inference) -> torch.Tensor:
    """`step_mask` for keys in slot order, as an additive bias (0 or -inf, which SDPA takes without converting
    it each call): ring slot j (< C) holds the position whose index in position order is (j - end) mod C; the
    new keys follow the ring in both orders."""
    mask = _slot_order(_step_mask(n_q, capacity + t, (left, right), left, (k_start,), (capacity + t,), device),
                       [end_slot], capacity, t)
    zero = torch.zeros((), device=device, dtype=dtype)
    return torch.where(mask, zero, torch.full((), float("-inf"), device=device, dtype=dtype))


def ring_attention_torch(q, k_ring, v_ring, k_new, v_new, window, *, end, stream_start, new_counts=None,
                         scale=None, dense: bool = False) -> torch.Tensor:
    """PyTorch version of the ring step: unroll the ring, append the new keys, attend.

    Keys then cover positions end - C .. end + t - 1 and the queries start at end - right, i.e. at key
    index C - right = left; slots of positions before the stream began are masked by `k_start`. With
    per-row positions, row b's keys past C + new_counts[b] are padding and masked too."""
    capacity, t = k_ring.shape[2], k_new.shape[2]
    batch = q.shape[0]
    ends = [end] * batch if isinstance(end, int) else list(end)
    starts = [stream_start] * batch if isinstance(stream_start, int) else list(stream_start)
    counts = [t] * batch if new_counts is None else list(new_counts)
    k_start = [max(0, s - (e - capacity)) for s, e in zip(starts, ends, strict=True)]
    k_len = [capacity + c for c in counts]
    if not dense and q.shape[2] * (capacity + t) <= SMALL_STEP:
        # A short step attends the ring as it lies (slot order), with each row's mask columns permuted to
        # match, as `ring_attention_small` does: no gather of the keys and values.
        mask = _slot_order(step_mask(q.shape[2], capacity + t, window, window[0], k_start, k_len, q.device), ends,
                           capacity, t)
        return F.scaled_dot_product_attention(q, _with_new(k_ring, k_new), _with_new(v_ring, v_new), attn_mask=mask,
                                              scale=scale)
    keys = torch.cat([ring_read(k_ring, end), k_new], dim=2)
    values = torch.cat([ring_read(v_ring, end), v_new], dim=2)
    ragged = _one(k_start) is None or _one(k_len) is None or k_len[0] != keys.shape[2]
    if not ragged:  # (a short step without `dense` returned above: this one is long, or the definition)
        placement = dict(q_offset=window[0], k_start=k_start[0], scale=scale)
        kernel = attention_reference if dense else blocked_attention
        return kernel(q, keys, values, window, **placement)
    if dense:
        mask = step_mask(q.shape[2], keys.shape[2], window, window[0], k_start, k_len, q.device)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
    # Long ragged steps: the blocked kernel per group of rows that share a first valid key.
    out = torch.empty_like(q)
    lengths = torch.tensor(k_len, device=q.device)
    for lo in sorted(set(k_start)):
        rows = torch.tensor([b for b in range(batch) if k_start[b] == lo], device=q.device)
        out[rows] = blocked_attention(q[rows], keys[rows], values[rows], window, q_offset=window[0], k_start=lo,
                                      k_lengths=lengths[rows], scale=scale)
    return out
