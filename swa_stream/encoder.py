"""SWAEncoder: a stack of pre-norm transformer blocks with sliding-window attention that runs either
offline (`forward`) or as a stream (`init_state` / `step` / `flush`) with identical outputs.

Streaming, per layer with window (left, right) = (L, R) and cache size C = L + R:

    keys/values cached   [b-C ............ b)   new chunk [b ........ b+t)
    queries answered now           [b-R ............ b+t-R)
    queries held back                                  [b+t-R .. b+t)

A query is answered once its R right neighbours exist, so layer i emits what it received less R_i,
and the stack delays every output by sum(R_i) input positions. `flush` answers the held-back queries
with the keys that exist, exactly as offline attention treats the end of a sequence.

The variants (docs/variants.md) keep that shape. A dilated window counts (L, R) in steps of d, so it
caches d times as many positions. Sinks add the stream's first S keys; global tokens add a running
softmax summary per head (max, sum, weighted value). A downsampled layer mean-pools whole groups of its
input and holds the remainder of a group until it completes (or the stream ends). The stack's output
is repeated back to the input rate and added to the full-rate rows that entered the first pooled layer
(a bypass, as Zipformer's stacks have: the pooled layers add context, the bypass keeps each position's
own detail), so the encoder still maps (B, T, d) to (B, T, d) with per-position outputs.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from swa_stream.attention import SWAAttention
from swa_stream.config import SWAConfig
from swa_stream.kernels.ring import ring_write
from swa_stream.kernels.variants import prefix_summary
from swa_stream.lengths import zero_past
from swa_stream.state import LayerState, StreamState


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


def summaries_at(summary: torch.Tensor, reach_right: int, lengths: torch.Tensor | None) -> torch.Tensor:
    """summary (B, H, G, T, D) after each position -> what query i reads: the summary after position
    i + reach_right (the newest key it sees), or after the last valid position."""
    batch, heads, n_global, length, dim = summary.shape
    last = torch.full((batch, 1), length - 1, device=summary.device)
    if lengths is not None:
        last = (lengths.to(summary.device) - 1).clamp(min=0)[:, None]
    index = torch.minimum(torch.arange(length, device=summary.device)[None] + reach_right, last)
    return summary.gather(3, index[:, None, None, :, None].expand(batch, heads, n_global, length, dim))


class SWABlock(nn.Module):
    """x + attn(norm(x)), then h + ffn(norm(h)); attention sees a (left, right) window."""

    def __init__(self, cfg: SWAConfig, layer: int, backend: str = "auto"):
        super().__init__()
        self.left, self.right = cfg.reaches[layer]
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = SWAAttention(cfg, layer, backend)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ffn_dim), nn.GELU(), nn.Linear(cfg.ffn_dim, cfg.d_model)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def _finish(self, resid: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        h = resid + self.drop(attended)
        return h + self.drop(self.ffn(self.norm2(h)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        p = self.attn.project(self.norm1(x), start=0)
        summaries = None
        if p.from_global is not None:
            summaries = summaries_at(prefix_summary(p.from_global, p.v)[0], self.right, lengths)
        return self._finish(x, self.attn.attend(p, lengths, summaries))

    def _answer(self, queries, resid, st: LayerState, k_new, v_new, end: int, stream_start: int,
                **extras) -> torch.Tensor:
        """Answer queries for positions end - R .. with the cached ring plus the new keys, and drop the rows
        of positions before the stream began (their slots were never written)."""
        attended = self.attn.attend_ring(queries, st.k, st.v, k_new, v_new, end=end, stream_start=stream_start,
                                         **extras)
        y = self._finish(resid, attended)
        skip = min(y.shape[1], max(0, stream_start - (end - self.right)))
        return y[:, skip:]

    def _sinks(self, st: LayerState, stream_start: int):
        positions = stream_start + torch.arange(st.sink_k.shape[2], device=st.sink_k.device)
        return (st.sink_k, st.sink_v, positions)

    def _keep_sinks(self, new: LayerState, p, first: int, stream_start: int):
        """Write the stream's first positions into the sinks as they arrive (`first`: the index of this chunk's
        first position in the stream); return the sinks for this step's attention."""
        n = max(0, min(p.k.shape[2], new.sink_k.shape[2] - first))
        if n:
            slots = torch.arange(first, first + n, device=p.k.device)
            new.sink_k = new.sink_k.index_copy(2, slots, p.k[:, :, :n])
            new.sink_v = new.sink_v.index_copy(2, slots, p.v[:, :, :n])
        return self._sinks(new, stream_start)

    def _advance_globals(self, new: LayerState, p, t: int) -> dict:
        """The answered queries (b-R ..) read the summaries after the new positions (b ..); the running
        summaries move past the new positions, and the newest R queries' scores wait with them."""
        to_global = torch.cat([new.pending_g, p.to_global], dim=2)
        summary, carry = prefix_summary(p.from_global, p.v, new.global_carry)
        new.pending_g = to_global[:, :, t:].clone()
        new.global_max, new.global_sum, new.global_acc = (c.to(new.global_acc.dtype) for c in carry)
        return dict(to_global=to_global[:, :, :t], summaries=summary)

    def step(self, x: torch.Tensor, st: LayerState, b: int, stream_start: int) -> tuple[torch.Tensor, LayerState]:
        """Take inputs x (B, t, d) for positions b .. b+t-1; emit the positions that became final."""
        t = x.shape[1]
        p = self.attn.project(self.norm1(x), start=b)
        queries = torch.cat([st.pending_q, p.q], dim=2)  # positions b-R .. b+t-1
        resid = torch.cat([st.pending_x, x], dim=1)
        new = replace(  # clones: a view would keep this whole chunk alive inside the state
            st,
            k=ring_write(st.k, p.k, end=b + t),
            v=ring_write(st.v, p.v, end=b + t),
            pending_x=resid[:, t:].clone(),
            pending_q=queries[:, :, t:].clone(),
        )
        extras = {}
        if st.sink_k is not None:
            extras["sinks"] = self._keep_sinks(new, p, b - stream_start, stream_start)
        if p.to_global is not None:
            extras.update(self._advance_globals(new, p, t))
        y = self._answer(queries[:, :, :t], resid[:, :t], st, p.k, p.v, b, stream_start, **extras)
        return y, new

    def finish(self, st: LayerState, b: int, stream_start: int) -> torch.Tensor:
        """Answer the held-back queries (positions b-R .. b-1) with the keys that exist: the end of stream."""
        none = st.k[:, :, :0]
        extras = {}
        if st.sink_k is not None:
            extras["sinks"] = self._sinks(st, stream_start)
        if st.pending_g is not None:  # every held-back query reads the summary after the last position
            last = st.global_acc / st.global_sum.clamp_min(1e-30)[..., None]
            extras.update(to_global=st.pending_g, summaries=last[:, :, :, None].expand(-1, -1, -1, self.right, -1))
        return self._answer(st.pending_q, st.pending_x, st, none, none, b, stream_start, **extras)


class SWAEncoder(nn.Module):
    """(B, T, d_model) -> (B, T, d_model), offline or streamed; see the module docstring."""

    def __init__(self, cfg: SWAConfig, backend: str = "auto"):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(SWABlock(cfg, i, backend) for i in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

    def receptive_field(self) -> tuple[int, int]:
        """(left, right) input positions that reach each output through the windows, over all layers."""
        return self.cfg.receptive_field()

    def auxiliary_loss(self) -> torch.Tensor:
        """Adaptive span's L1 pressure: span_penalty * the mean learned span as a fraction of its window
        (Sukhbaatar et al. 2019). Zero without adaptive spans; tasks add it to their loss."""
        spans = [b.attn.span.clamp(0, 1) for b in self.blocks if b.attn.span is not None]
        if not spans or not self.cfg.span_penalty:
            return self.norm.weight.new_zeros(())
        return self.cfg.span_penalty * torch.cat(spans).mean()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, d_model); lengths (B,) valid lengths. Rows past a length come out as zeros."""
        length, layer_lengths, bypass = x.shape[1], lengths, None
        for i, (block, stride) in enumerate(zip(self.blocks, self.cfg.strides, strict=True)):
            if stride > 1:
                bypass = x if i == self._first_pooled else bypass
                x, layer_lengths = mean_pool(x, layer_lengths, stride)
            x = block(x, layer_lengths)
        y = self.norm(self._upsample(x, length, bypass))
        return y if lengths is None else zero_past(y, lengths)

    @property
    def _first_pooled(self) -> int | None:
        return next((i for i, s in enumerate(self.cfg.strides) if s > 1), None)

    def _upsample(self, x: torch.Tensor, rows: int, bypass: torch.Tensor | None) -> torch.Tensor:
        """Repeat each position of the last layer `rate` times (the input positions it stands for), keep
        `rows`, and add the bypass (the full-rate rows before the first pooling)."""
        rate = self.cfg.rates[-1]
        return x if rate == 1 else x.repeat_interleave(rate, dim=1)[:, :rows] + bypass

    # ---- streaming -----------------------------------------------------------------------------
    def init_state(
        self, batch_size: int, start_position: int = 0, device=None, dtype=None
    ) -> StreamState:
        """Empty state for `batch_size` streams whose first input has absolute position `start_position`."""
        ref = self.norm.weight
        device, dtype = device or ref.device, dtype or ref.dtype
        cfg, zeros = self.cfg, lambda *shape: torch.zeros(*shape, device=device, dtype=dtype)
        b, h, dh, g = batch_size, cfg.n_heads, cfg.head_dim, cfg.global_tokens
        layers = []
        for block, stride in zip(self.blocks, cfg.strides, strict=True):
            capacity, right = block.attn.cache_left() + block.right, block.right
            st = LayerState(k=zeros(b, h, capacity, dh), v=zeros(b, h, capacity, dh),
                            pending_x=zeros(b, right, cfg.d_model), pending_q=zeros(b, h, right, dh))
            if cfg.sink_tokens:
                st.sink_k, st.sink_v = zeros(b, h, cfg.sink_tokens, dh), zeros(b, h, cfg.sink_tokens, dh)
            if g:
                st.pending_g = zeros(b, h, right, g)
                st.global_max = torch.full((b, h, g), float("-inf"), device=device, dtype=dtype)
                st.global_sum, st.global_acc = zeros(b, h, g), zeros(b, h, g, dh)
            if stride > 1:
                st.pool = zeros(b, 0, cfg.d_model)
            layers.append(st)
        bypass = None if self._first_pooled is None else zeros(b, 0, cfg.d_model)
        return StreamState(start=int(start_position), received=0, layers=layers, bypass=bypass)

    def _check_chunk(self, chunk: torch.Tensor, state: StreamState) -> None:
        if chunk.dim() != 3 or chunk.shape[0] != state.batch_size or chunk.shape[2] != self.cfg.d_model:
            raise ValueError(
                f"chunk must be (B={state.batch_size}, t, d_model={self.cfg.d_model}); got {tuple(chunk.shape)}"
            )

    def _received(self, state: StreamState) -> list[int]:
        return state.layer_inputs_received([b.right for b in self.blocks], self.cfg.strides)

    def step(self, chunk: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """Feed chunk (B, t, d_model); return (the positions that became final, the next state)."""
        self._check_chunk(chunk, state)
        x, layers, bypass = chunk, [], state.bypass
        for i, (block, st, n, stride) in enumerate(zip(self.blocks, state.layers, self._received(state),
                                                       self.cfg.strides, strict=True)):
            if stride > 1:  # pool whole groups; the rest of a group waits in the state
                bypass = torch.cat([bypass, x], dim=1) if i == self._first_pooled else bypass
                pending = torch.cat([st.pool, x], dim=1)
                whole = pending.shape[1] // stride * stride
                x = pending[:, :whole].unflatten(1, (whole // stride, stride)).mean(2)
                st = replace(st, pool=pending[:, whole:].clone())
            if x.shape[1] == 0:  # nothing new reaches this layer yet
                layers.append(st)
                continue
            x, st = block.step(x, st, state.start + n, state.start)
            layers.append(st)
        rows = x.shape[1] * self.cfg.rates[-1]
        y = self.norm(self._upsample(x, rows, None if bypass is None else bypass[:, :rows]))
        bypass = None if bypass is None else bypass[:, rows:].clone()
        return y, StreamState(state.start, state.received + chunk.shape[1], layers, bypass)

    def flush(self, state: StreamState) -> torch.Tensor:
        """Finish the stream: emit every held-back position, as offline does at the end of a sequence."""
        received = self._received(state)
        x, bypass = state.layers[0].pending_x[:, :0], state.bypass
        for i, (block, st, n, stride) in enumerate(zip(self.blocks, state.layers, received, self.cfg.strides,
                                                       strict=True)):
            b = state.start + n
            if stride > 1:  # whole groups, then the group the end cut short
                bypass = torch.cat([bypass, x], dim=1) if i == self._first_pooled else bypass
                pending = torch.cat([st.pool, x], dim=1)
                x = mean_pool(pending, None, stride)[0]
            if x.shape[1]:
                emitted, st = block.step(x, st, b, state.start)
                b += x.shape[1]
            else:
                emitted = x
            x = torch.cat([emitted, block.finish(st, b, state.start)], dim=1)
        emitted_before = max(0, received[-1] - self.blocks[-1].right) * self.cfg.rates[-1]
        return self.norm(self._upsample(x, state.received - emitted_before, bypass))
