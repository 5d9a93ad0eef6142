"""Key/value ring buffers: position p lives in slot p % C. Every "position mod capacity" in the project
is here, in the style of mistral-inference's rotating buffer: small functions a reader can check by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from swa_stream.kernels.cpu import blocked_attention
from swa_stream.kernels.reference import attention_reference, visibility_mask

# Below this many (query, key) pairs a streaming step attends with one masked SDPA call: a few queries
# against a ring of tens of keys, where the blocked path's planning costs more than the arithmetic.
SMALL_STEP = 8192


def _slots(first_position: int, count: int, capacity: int, device) -> torch.Tensor:
    return (first_position + torch.arange(count, device=device)) % capacity


def ring_read(ring: torch.Tensor, end: int) -> torch.Tensor:
    """The ring (B, H, C, D) in position order: rows for positions end - C .. end - 1."""
    capacity = ring.shape[2]
    if capacity == 0:
        return ring
    return ring.index_select(2, _slots(end - capacity, capacity, capacity, ring.device))


def ring_write(ring: torch.Tensor, rows: torch.Tensor, end: int) -> torch.Tensor:
    """A new ring holding `rows` (B, H, t, D), positions end - t .. end - 1, over the old one."""
    capacity = ring.shape[2]
    keep = min(capacity, rows.shape[2])
    if keep == 0:
        return ring
    return ring.index_copy(2, _slots(end - keep, keep, capacity, ring.device), rows[:, :, rows.shape[2] - keep :])


def ring_attention_torch(
    q, k_ring, v_ring, k_new, v_new, window, *, end: int, stream_start: int, scale=None, dense: bool = False
) -> torch.Tensor:
    """PyTorch version of the ring step: unroll the ring, append the new keys, attend.

    Keys then cover positions end - C .. end + t - 1 and the queries start at end - right, i.e. at key
    index C - right = left; slots of positions before the stream began are masked by `k_start`."""
    capacity = k_ring.shape[2]
    keys = torch.cat([ring_read(k_ring, end), k_new], dim=2)
    values = torch.cat([ring_read(v_ring, end), v_new], dim=2)
    placement = dict(q_offset=window[0], k_start=max(0, stream_start - (end - capacity)), scale=scale)
    if dense:
        return attention_reference(q, keys, values, window, **placement)
    if q.shape[2] * keys.shape[2] <= SMALL_STEP:
        # Every query sees at least its own key (it is in k_new, after the stream start), so no row of the
        # mask is empty and SDPA's softmax is well defined.
        mask = visibility_mask(q.shape[2], keys.shape[2], window, q_offset=window[0],
                               k_start=placement["k_start"], device=q.device)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
    return blocked_attention(q, keys, values, window, **placement)
