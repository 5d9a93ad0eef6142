"""The variants' parts of a streaming layer: sinks and global tokens, each the owner of its slice of the
layer state, each a source of extra (logits, values) for the layer's one softmax (see docs/variants.md).

Offline, global tokens read `summaries_at` each query's newest key; streaming, the running summary moves
past each row's new positions. Sinks are the stream's first S keys, written as they arrive.
"""

from __future__ import annotations

import torch

from swa_stream.kernels import NEG, prefix_summary
from swa_stream.ragged import Rows, take, valid_mask
from swa_stream.state import LayerState


def summaries_at(summary: torch.Tensor, reach_right: int, lengths: torch.Tensor | None) -> torch.Tensor:
    """summary (B, H, G, T, D) after each position -> what query i reads: the summary after position
    i + reach_right (the newest key it sees), or after the last valid position."""
    batch, heads, n_global, length, dim = summary.shape
    last = torch.full((batch, 1), length - 1, device=summary.device)
    if lengths is not None:
        last = (lengths.to(summary.device) - 1).clamp(min=0)[:, None]
    index = torch.minimum(torch.arange(length, device=summary.device)[None] + reach_right, last)
    return summary.gather(3, index[:, None, None, :, None].expand(batch, heads, n_global, length, dim))


def keep_sinks(new: LayerState, p, rows: Rows):
    """Write the stream's first positions into the sinks as they arrive: sink s is position s of the
    stream, row j of this chunk is position n + j; return the sinks for this step's attention."""
    n_sinks, t = new.sink_k.shape[2], p.k.shape[2]
    if min(rows.n) < n_sinks:
        j = torch.arange(n_sinks)[None] - torch.tensor(rows.n)[:, None]  # (B, S)
        fresh = ((j >= 0) & (j < torch.tensor(rows.counts)[:, None])).to(p.k.device)[:, None, :, None]
        index = j.clamp(0, t - 1).to(p.k.device)[:, None, :, None].expand(-1, p.k.shape[1], -1, p.k.shape[3])
        new.sink_k = torch.where(fresh, p.k.gather(2, index), new.sink_k)
        new.sink_v = torch.where(fresh, p.v.gather(2, index), new.sink_v)
    return new.sink_k, new.sink_v


def advance_globals(new: LayerState, p, rows: Rows, right: int) -> dict:
    """The answered queries (b-R ..) read the summaries after the new positions (b ..); the running
    summaries move past each row's new positions (padding scores -inf-like, so it adds nothing), and
    the newest R queries' scores wait with them."""
    t = p.k.shape[2]
    to_global = torch.cat([new.pending_g, p.to_global], dim=2)
    from_global = p.from_global
    if rows.new_counts is not None:
        valid = valid_mask(rows.counts, t, from_global.device)[:, None, None]
        from_global = from_global.masked_fill(~valid, NEG)
    summary, carry = prefix_summary(from_global, p.v, new.global_carry)
    carry = [c.to(new.global_acc.dtype) for c in carry]
    if 0 in rows.counts:  # a row without new positions keeps its summary as it was
        moved = torch.tensor([c > 0 for c in rows.counts], device=carry[0].device)
        carry = [torch.where(moved.view(-1, *[1] * (c.dim() - 1)), c, old)
                 for c, old in zip(carry, new.global_carry, strict=True)]
    new.global_max, new.global_sum, new.global_acc = carry
    new.pending_g = take(to_global, rows.counts, right, dim=2).clone()
    return dict(to_global=to_global[:, :, :t], summaries=summary)


def finish_extras(st: LayerState, right: int) -> dict:
    """The extras for the held-back queries at the end of a stream: the sinks, and for global tokens the
    summary after the last position (which every held-back query reads)."""
    extras = {}
    if st.sink_k is not None:
        extras["sinks"] = (st.sink_k, st.sink_v)
    if st.pending_g is not None:
        last = st.global_acc / st.global_sum.clamp_min(1e-30)[..., None]
        extras.update(to_global=st.pending_g, summaries=last[:, :, :, None].expand(-1, -1, -1, right, -1))
    return extras
