"""A downsampled stage: mean-pool whole groups of `stride` positions, offline (`mean_pool`) and streaming
(`pool_step`, whose remainder of a group waits in the layer state's `pool` until it completes or the stream
ends). The encoder repeats the stack's output back to the input rate and adds the bypass (see encoder.py).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from swa_stream.lengths import zero_past
from swa_stream.ragged import ragged_cat, take
from swa_stream.state import LayerState


def mean_pool(x: torch.Tensor, lengths: torch.Tensor | None, stride: int):
    """(B, T, d) -> (B, ceil(T / stride), d): the mean of each group of `stride` positions; a group cut
    short by the end (or by a length) averages what it has. Returns the pooled lengths too."""
    batch, length, _ = x.shape
    n = -(-length // stride)
    valid = torch.full((batch,), length, device=x.device) if lengths is None else lengths.to(x.device)
    x = F.pad(zero_past(x, valid), (0, 0, 0, n * stride - length))
    sums = x.view(batch, n, stride, x.shape[-1]).sum(2)
    counts = (valid[:, None] - torch.arange(n, device=x.device)[None] * stride).clamp(1, stride)
    pooled_lengths = None if lengths is None else (lengths + stride - 1) // stride
    return sums / counts[..., None].to(x.dtype), pooled_lengths


def pool_step(x, counts: list[int], st: LayerState, fed: list[int], stride: int, end: bool):
    """Mean-pool whole groups (at the end also the group it cut short); the rest of a group waits."""
    held = [f % stride for f in fed]
    pending, total = ragged_cat(st.pool, held, x), [h + c for h, c in zip(held, counts, strict=True)]
    if end:
        pooled = mean_pool(pending, torch.tensor(total, device=x.device), stride)[0]
        return pooled, [-(-n // stride) for n in total], st
    groups = [n // stride for n in total]
    whole = max(groups) * stride
    pooled = pending[:, :whole].unflatten(1, (whole // stride, stride)).mean(2)
    return pooled, groups, replace(st, pool=take(pending, [g * stride for g in groups], stride - 1).clone())
