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

from swa_stream.attention import SWAAttention, apply_ffn, linear, stock
from swa_stream.config import SWAConfig
from swa_stream.errors import SWAStreamError
from swa_stream.extras import advance_globals, finish_extras, keep_sinks
from swa_stream.kernels import fused_linear, fused_ring_step, ring_window_attention, ring_write
from swa_stream.lengths import zero_past
from swa_stream.pool import mean_pool, pool_step
from swa_stream.ragged import Rows, as_counts, ragged_cat, take, uniform, zero_padding
from swa_stream.state import LayerState, StreamState, layer_state_shapes, state_bytes


def column_major(linear: nn.Linear) -> nn.Linear:
    """Store the weight (out, in) transposed in memory, its shape and values unchanged: `F.linear` then
    multiplies by a contiguous (in, out) matrix, the layout in which a streaming step's few rows multiply
    fastest (about 40% less time per product at 4 rows here). Loading, optimiser steps, `.to()` and
    safetensors all keep the layout; saved weights are the same numbers."""
    linear.weight = nn.Parameter(linear.weight.detach().t().contiguous().t(), linear.weight.requires_grad)
    return linear


def aten_gelu(x: torch.Tensor) -> torch.Tensor:
    """F.gelu(x), exact (erf), by ATen's own kernel. On a contiguous float32 CPU tensor torch hands GELU to
    oneDNN, whose per-call set-up costs about four times the arithmetic at a streaming step's size (9 against
    2.4 microseconds at 4 x 576); on a transposed view ATen computes it itself. Values agree to a few ulps."""
    return F.gelu(x.transpose(-1, -2)).transpose(-1, -2)


# The modules a plain block is built of, in `_stock_parts` order.
_STOCK = (nn.LayerNorm, nn.Linear, nn.Linear, nn.LayerNorm, nn.Linear, nn.GELU, nn.Linear)


class SWABlock(nn.Module):
    """x + attn(norm(x)), then h + ffn(norm(h)); attention sees a (left, right) window.

    Offline (`forward`) this is nanoGPT's Block. Streaming, `step_aligned` is the same block over a ring of
    cached keys (one position for every row), and `step` / `finish` add what ragged rows and the variants
    need: per-row positions, and the extra keys of sinks and global tokens (swa_stream/extras.py)."""

    def __init__(self, cfg: SWAConfig, layer: int, backend: str = "auto"):
        super().__init__()
        self.left, self.right = cfg.reaches[layer]
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = SWAAttention(cfg, layer, backend)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ffn_dim), nn.GELU(), nn.Linear(cfg.ffn_dim, cfg.d_model)
        )
        for part in (self.attn.qkv, self.attn.out, self.ffn[0], self.ffn[2]):
            column_major(part)
        self.drop = nn.Dropout(cfg.dropout)

    def _finish(self, resid: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.drop.p):  # inference: two calls fewer per layer and step
            h = resid + attended
            return h + apply_ffn(self.ffn, self.norm2(h))
        h = resid + self.drop(attended)
        return h + self.drop(self.ffn(self.norm2(h)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), lengths))
        return x + self.drop(self.ffn(self.norm2(x)))

    # ---- streaming: every row is its own stream (see swa_stream/ragged.py) -----------------------
    def _answer(self, queries, resid, st: LayerState, k_new, v_new, rows: Rows, **extras):
        """Answer queries for positions end - R .. with the cached ring plus the new keys; keep, per row,
        the answers of positions from the stream's start on (earlier slots were never written), left-aligned.
        Returns (outputs (B, t', d), per-row counts)."""
        attended = self.attn.attend_ring(queries, st.k, st.v, k_new, v_new, end=rows.ends, stream_start=rows.starts,
                                         new_counts=rows.new_counts, **extras)
        y = self._finish(resid, attended)
        answered = rows.counts if k_new.shape[2] else [queries.shape[2]] * len(rows.counts)
        skip = [min(c, max(0, self.right - n)) for c, n in zip(answered, rows.n, strict=True)]
        kept = [c - s for c, s in zip(answered, skip, strict=True)]
        return take(y, skip, max(kept, default=0)), kept

    def step(self, x: torch.Tensor, st: LayerState, rows: Rows) -> tuple[torch.Tensor, list[int], LayerState]:
        """Take inputs x (B, t, d): row b's first rows.counts[b] are its positions n[b] .. of its stream.
        Emit the positions that became final: (outputs (B, t', d) left-aligned, per-row counts, state)."""
        if rows.new_counts is None and st.sink_k is None and st.pending_g is None:
            y, count, new = self.step_aligned(x, st, rows.ends[0], rows.n[0])
            return y, [count] * x.shape[0], new
        p = self.attn.project(self.norm1(x), start=rows.ends if rows.new_counts is not None else rows.ends[0])
        queries = torch.cat([st.pending_q, p.q], dim=2)  # index i: position end - R + i
        resid = torch.cat([st.pending_x, x], dim=1)
        after = [e + c for e, c in zip(rows.ends, rows.counts, strict=True)]
        new = replace(  # clones: a view would keep this whole chunk alive inside the state
            st,
            k=ring_write(st.k, p.k, after, rows.new_counts),
            v=ring_write(st.v, p.v, after, rows.new_counts),
            pending_x=take(resid, rows.counts, self.right, dim=1).clone(),
            pending_q=take(queries, rows.counts, self.right, dim=2).clone(),
        )
        extras = {}
        if st.sink_k is not None:
            extras["sinks"] = keep_sinks(new, p, rows)
        if p.to_global is not None:
            extras.update(advance_globals(new, p, rows, self.right))
        t = x.shape[1]
        y, counts = self._answer(queries[:, :, :t], resid[:, :t], st, p.k, p.v, rows, **extras)
        return y, counts, new

    def step_aligned(self, x: torch.Tensor, st: LayerState, end: int, n: int) -> tuple[torch.Tensor, int, LayerState]:
        """`step` when every row is at the same position (end: the absolute position of x's first row, n: of
        its stream) and neither sinks nor global tokens are on, with the bookkeeping in two integers. The same
        arithmetic as the ragged path. (A plain stack's hot path without autograd is
        `SWAEncoder._step_inference`, which does this for every layer in one loop.)"""
        p = self.attn.project(self.norm1(x), start=end)
        queries, resid, new, skip = self._hold_back(x, p.q, p.k, p.v, st, end, n)
        attended = self.attn.attend_ring(queries, st.k, st.v, p.k, p.v, end=end, stream_start=end - n)
        return self._finish(resid[:, skip:], attended[:, skip:]), x.shape[1] - skip, new

    def _hold_back(self, x, q, k, v, st: LayerState, end: int, n: int):
        """The aligned step's bookkeeping: the queries and residuals answered now (positions end - R ..,
        the R that lookahead held back first), the state after the step (new keys in the ring, the newest R
        held back), and how many answers precede the stream's start (their slots were never written)."""
        t = x.shape[1]
        if self.right:
            queries, resid = torch.cat([st.pending_q, q], dim=2), torch.cat([st.pending_x, x], dim=1)
            # clones: a view would keep this whole chunk alive inside the state
            pending_q, pending_x = queries[:, :, t:].clone(), resid[:, t:].clone()
            queries, resid = queries[:, :, :t], resid[:, :t]
        else:
            queries, resid, pending_q, pending_x = q, x, st.pending_q, st.pending_x
        new = LayerState(k=ring_write(st.k, k, end + t), v=ring_write(st.v, v, end + t), pending_x=pending_x,
                         pending_q=pending_q, pool=st.pool)
        return queries, resid, new, min(t, max(0, self.right - n))

    def _stock_parts(self):
        """The tensors of (norm1, qkv, out, norm2, ffn linear, ffn linear) as `SWAEncoder._step_inference` takes them,
        when every part is the stock torch module with no hooks (so that using their tensors directly is what
        calling the modules would do), the GELU exact and the window plain and undilated; else None (a
        quantised or parametrised linear, a swapped activation, a hook or a variant takes the general path)."""
        mods = self._modules
        attn, ffn = mods["attn"], mods["ffn"]
        if not attn.plain or attn.dilation != 1:
            return None
        sub, parts = attn._modules, ffn._modules
        parts = (mods["norm1"], sub["qkv"], sub["out"], mods["norm2"], parts["0"], parts["1"], parts["2"])
        if not stock(ffn, *parts) or any(type(part) is not kind for part, kind in zip(parts, _STOCK, strict=True)):
            return None
        if parts[5].approximate != "none":
            return None
        (n1, qkv, out, n2, ff1, _, ff2) = (p.__dict__ for p in parts)
        n1p, qp, op, n2p, f1p, f2p = (p["_parameters"] for p in (n1, qkv, out, n2, ff1, ff2))
        return (n1p["weight"], n1p["bias"], n1["eps"], qp["weight"], qp["bias"], op["weight"], op["bias"],
                n2p["weight"], n2p["bias"], n2["eps"], f1p["weight"], f1p["bias"], f2p["weight"], f2p["bias"])

    def finish(self, st: LayerState, rows: Rows) -> tuple[torch.Tensor, list[int]]:
        """Answer the held-back queries (positions end-R .. end-1) with the keys that exist: the end of
        stream. Returns (outputs left-aligned, per-row counts)."""
        none = st.k[:, :, :0]
        extras = finish_extras(st, self.right)
        return self._answer(st.pending_q, st.pending_x, st, none, none, rows.finishing(), **extras)


class SWAEncoder(nn.Module):
    """(B, T, d_model) -> (B, T, d_model), offline or streamed; see the module docstring."""

    def __init__(self, cfg: SWAConfig, backend: str = "auto"):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(SWABlock(cfg, i, backend) for i in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self._token = object()  # marks the states this encoder's `step` returns (see `check_state`)

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
        return x if rate == 1 else x.repeat_interleave(rate, dim=1)[:, :rows] + bypass[:, :rows]

    # ---- streaming -----------------------------------------------------------------------------
    def state_shapes(self, batch_size: int = 1) -> list[dict[str, tuple]]:
        """Each layer's state shapes, from the one definition (`swa_stream.state.layer_state_shapes`)."""
        return [layer_state_shapes(self.cfg, i, batch_size, b.attn.cache_left()) for i, b in enumerate(self.blocks)]

    def state_bytes(self, element_size: int = 4) -> int:
        """Bytes of stream state per stream (at most: a downsampled stack's bypass varies below its bound)."""
        return state_bytes(self.cfg, element_size, [b.attn.cache_left() for b in self.blocks])

    def init_state(self, batch_size: int, start_position=0, device=None, dtype=None) -> StreamState:
        """Empty state for `batch_size` streams whose first input has absolute position `start_position`
        (one integer, or one per stream)."""
        ref = self.norm.weight
        device, dtype = device or ref.device, dtype or ref.dtype
        layers = []
        for shapes in self.state_shapes(batch_size):
            st = LayerState(**{n: torch.zeros(s, device=device, dtype=dtype) for n, s in shapes.items()})
            if st.global_max is not None:  # an empty running softmax
                st.global_max.fill_(float("-inf"))
            layers.append(st)
        bypass = None if self._first_pooled is None else torch.zeros(batch_size, 0, self.cfg.d_model, device=device,
                                                                       dtype=dtype)
        start = torch.as_tensor(start_position, dtype=torch.int64)
        return StreamState(start=start, received=0, layers=layers, bypass=bypass)

    def check_state(self, state: StreamState) -> None:
        """Refuse a state made for an encoder of another config, naming what differs."""
        if not isinstance(state, StreamState):
            raise SWAStreamError(f"state: expected a StreamState, got {type(state).__name__}")
        if state.__dict__.get("_made_by") is self._token:  # this encoder's own step made it: already checked
            return
        if len(state.layers) != len(self.blocks):
            raise SWAStreamError(f"state: made for {len(state.layers)} layers, this encoder has {len(self.blocks)}"
                                 " (n_layers)")
        if (state.bypass is None) != (self._first_pooled is None):
            raise SWAStreamError("state: made for an encoder with other downsample strides (downsample)")
        for i, (shapes, st) in enumerate(zip(self.state_shapes(state.batch_size), state.layers, strict=True)):
            have = {n: tuple(t.shape) for n, t in st.tensors().items()}
            for name in sorted(set(shapes) | set(have)):
                if shapes.get(name) != have.get(name):
                    raise SWAStreamError(
                        f"state: layer {i}'s {name} is {have.get(name)} in the state but {shapes.get(name)} in this "
                        f"encoder: the state was made for another config ({STATE_FIELDS.get(name, name)} differ)"
                    )

    def _check_chunk(self, chunk: torch.Tensor, state: StreamState) -> None:
        if chunk.dim() != 3 or chunk.shape[0] != state.batch_size or chunk.shape[2] != self.cfg.d_model:
            raise ValueError(
                f"chunk must be (B={state.batch_size}, t, d_model={self.cfg.d_model}); got {tuple(chunk.shape)}"
            )
        self.check_state(state)

    def _schedule(self, received: list[int]) -> list[tuple[list[int], list[int]]]:
        """Per layer, per row: (inputs that reached the layer before pooling, positions it received)."""
        out, fed = [], list(received)
        for block, stride in zip(self.blocks, self.cfg.strides, strict=True):
            n = [f // stride for f in fed]
            out.append((fed, n))
            fed = [max(0, m - block.right) for m in n]
        return out

    def _emitted(self, schedule) -> list[int]:
        """Input-rate rows each stream has emitted: what the last layer answered, repeated by its rate."""
        return [max(0, m - self.blocks[-1].right) * self.cfg.rates[-1] for m in schedule[-1][1]]

    def _run(self, x, counts, state: StreamState, end: bool):
        """The stack over a ragged chunk: (outputs, per-row counts, layer states, bypass, bypass counts)."""
        received, starts = state.received.tolist(), state.start.tolist()
        schedule = self._schedule(received)
        bypass, waiting = state.bypass, None
        if bypass is not None:
            waiting = [f - e for f, e in zip(schedule[self._first_pooled][0], self._emitted(schedule), strict=True)]
        layers = []
        for i, (block, st, (fed, n), stride) in enumerate(zip(self.blocks, state.layers, schedule, self.cfg.strides,
                                                               strict=True)):
            if stride > 1:
                if i == self._first_pooled:
                    bypass = ragged_cat(bypass, waiting, x)
                    waiting = [w + c for w, c in zip(waiting, counts, strict=True)]
                x, counts, st = pool_step(x, counts, st, fed, stride, end)
            rows = Rows(starts, n, counts, x.shape[1])
            if max(counts, default=0):
                x, counts, st = block.step(x, st, rows)
                rows = Rows(starts, [m + c for m, c in zip(n, rows.counts, strict=True)], counts, x.shape[1])
            else:
                x, counts = x[:, :0], [0] * len(counts)
            if end:
                tail, tail_counts = block.finish(st, rows)
                x = ragged_cat(x, counts, tail)
                counts = [c + t for c, t in zip(counts, tail_counts, strict=True)]
            layers.append(st)
        return x, counts, layers, bypass, waiting

    def _output(self, x, counts, bypass, waiting, limit: list[int] | None = None):
        """Final rows per stream: the last layer's outputs repeated to the input rate (plus the bypass)."""
        rate = self.cfg.rates[-1]
        rows = [c * rate for c in counts] if limit is None else limit
        width = max(rows, default=0)
        y = self.norm(self._upsample(x, width, bypass))
        if bypass is not None:
            left = [w - r for w, r in zip(waiting, rows, strict=True)]
            bypass = take(bypass, rows, max(left, default=0)).clone()
        if not uniform(rows):
            y = zero_padding(y, rows)
        return y, rows, bypass

    def step(self, chunk: torch.Tensor, state: StreamState, counts=None):
        """Feed chunk (B, t, d_model) and return what became final.

        counts=None: every row takes all t positions, and `step` returns (outputs (B, t', d_model), state);
        the rows must have received the same count so far (else they emit different counts: pass counts).
        counts (B,) ints: row b takes its first counts[b] positions (0 allowed; the rest is padding), and
        `step` returns (outputs (B, t', d_model), lengths (B,) int64, state): row b's first lengths[b]
        outputs are its next final positions, the rest are zeros.
        """
        self._check_chunk(chunk, state)
        batch, t = chunk.shape[:2]
        given = as_counts(counts, batch, t)
        if self.aligned(state) and all(c == t for c in given):  # every row at one position, every row full
            start, received = (state.start.tolist()[0], state.received.tolist()[0]) if batch else (0, 0)
            y, new = self._step_aligned(chunk, state, start, received)
            return (y, new) if counts is None else (y, torch.full((batch,), y.shape[1], dtype=torch.int64), new)
        x, out_counts, layers, bypass, waiting = self._run(chunk, given, state, end=False)
        y, rows, bypass = self._output(x, out_counts, bypass, waiting)
        received = state.received + torch.tensor(given, dtype=torch.int64)
        new = StreamState(state.start, received, layers, bypass)
        new.__dict__["_made_by"] = self._token
        if counts is not None:
            return y, torch.tensor(rows, dtype=torch.int64), new
        if not uniform(rows):
            raise SWAStreamError("step: the rows are at different points of their streams and emit different "
                                 "counts; pass counts= to get per-row lengths")
        return y, new

    @property
    def _plain_stack(self) -> bool:
        return self._first_pooled is None and not self.cfg.has_extras

    def aligned(self, state: StreamState) -> bool:
        """Does `step(chunk, state)` take the single-position path: a plain stack (no pooling, sinks or global
        tokens) whose rows all started at one position and have received the same count."""
        if not self._plain_stack:
            return False
        return state.batch_size <= 1 or (uniform(state.start.tolist()) and uniform(state.received.tolist()))

    def _step_aligned(self, x: torch.Tensor, state: StreamState, start: int, received: int):
        """`step` for rows at one position of one stream each (a single stream, say) and no pooling, sinks or
        global tokens: the bookkeeping is two integers."""
        if not (self.training or torch.is_grad_enabled()):
            parts = [block._stock_parts() for block in self.blocks]
            if all(p is not None for p in parts):
                return self._step_inference(x, state, start, received, parts)
        layers, fed, t = [], received, x.shape[1]
        for block, st in zip(self.blocks, state.layers, strict=True):
            if x.shape[1]:
                x, _, st = block.step_aligned(x, st, start + fed, fed)
            layers.append(st)
            fed = max(0, fed - block.right)
        return self._stepped(x, state, t, layers)

    def _stepped(self, x: torch.Tensor, state: StreamState, t: int, layers: list[LayerState]):
        new = StreamState.stepped(state, t, layers)
        new.__dict__["_made_by"] = self._token
        return self.norm(x), new

    def _step_inference(self, x: torch.Tensor, state: StreamState, start: int, received: int, parts):
        """`_step_aligned` without autograd for stock blocks (`SWABlock._stock_parts`): each layer's
        `step_aligned` in fewer calls (2-D matrix products, the parts' tensors used directly, no empty
        concatenations, ATen's GELU, each run of rotary positions looked up once), all layers in one loop
        (a call per layer cost about 13 microseconds a layer more in an encoder-only trial at 4 positions).
        On the CPU the rotation, the ring write and the attention are one C call (`fused_ring_step`,
        kernels/cpu_step.c), which took the step from 1.0 to 0.8 of its time; where it does not apply,
        the PyTorch calls below do the same."""
        layers, fed, (batch, t, d), tables = [], received, x.shape, {}
        for block, st, parts_ in zip(self.blocks, state.layers, parts, strict=True):
            n, right, attn, size = fed, block.right, block._modules["attn"], x.shape[1]
            fed = max(0, fed - right)
            if not size:
                layers.append(st)
                continue
            n1w, n1b, eps1, wqkv, bqkv, wo, bo, n2w, n2b, eps2, w1, b1, w2, b2 = parts_
            end, rows = start + n, batch * size
            h = F.layer_norm(x.reshape(rows, d), (d,), n1w, n1b, eps1)
            qkv = linear(h, wqkv, bqkv)
            rope = attn._modules["rope"]
            table = tables.get((rope.key, end, size))  # the layers ask for a few runs of positions: look up each once
            if table is None:
                table = tables[rope.key, end, size] = rope.full_tables(end, size, x.dtype)
            if right:  # the R newest wait for their lookahead (as `SWABlock._hold_back`)
                resid = torch.cat([st.pending_x, x], dim=1)
                pending_x, resid = resid[:, size:].clone(), resid[:, :size]
            else:
                resid, pending_x = x, st.pending_x
            fused = fused_ring_step(qkv.view(batch, size, -1), *table, st.k, st.v, st.pending_q, attn.window, end=end,
                                    stream_start=start, backend=attn.backend)
            if fused is not None:  # rotation, ring write and attention in one C call (kernels/cpu_step.c)
                o, k_ring, v_ring, pending_q = fused
                layers.append(LayerState(k=k_ring, v=v_ring, pending_x=pending_x, pending_q=pending_q))
                y = linear(o.view(rows, d), wo, bo)
            else:
                qkv = qkv.view(batch, size, 3, attn.n_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
                q, k = rope.rotate_full(qkv[:2], *table).unbind(0)
                v = qkv[2]
                queries, pending_q = q, st.pending_q
                if right:
                    queries = torch.cat([st.pending_q, q], dim=2)
                    pending_q, queries = queries[:, :, size:].clone(), queries[:, :, :size]
                layers.append(LayerState(k=ring_write(st.k, k, end + size), v=ring_write(st.v, v, end + size),
                                         pending_x=pending_x, pending_q=pending_q))
                o = ring_window_attention(queries, st.k, st.v, k, v, attn.window, end=end, stream_start=start,
                                          backend=attn.backend)
                y = linear(o.transpose(1, 2).reshape(rows, d), wo, bo)
            y += resid.reshape(rows, d)
            h = F.layer_norm(y, (d,), n2w, n2b, eps2)
            f = fused_linear(h, w1, b1, gelu=True)
            y += linear(aten_gelu(F.linear(h, w1, b1)) if f is None else f, w2, b2)
            x = y.view(batch, size, d)[:, min(size, max(0, right - n)) :]
        return self._stepped(x, state, t, layers)

    def flush(self, state: StreamState, with_lengths: bool = False):
        """Finish the streams: emit every held-back position, as offline does at the end of a sequence.
        Returns outputs (B, t', d_model), or with `with_lengths` (outputs, lengths (B,)), which rows that
        are at different points of their streams need (row b's first lengths[b] outputs are its tail)."""
        self.check_state(state)
        batch = state.batch_size
        x = state.layers[0].pending_x[:, :0]
        received = state.received.tolist()
        emitted_before = self._emitted(self._schedule(received))
        x, counts, _, bypass, waiting = self._run(x, [0] * batch, state, end=True)
        rows = [r - e for r, e in zip(received, emitted_before, strict=True)]
        y, rows, _ = self._output(x, counts, bypass, waiting, limit=rows)
        if with_lengths:
            return y, torch.tensor(rows, dtype=torch.int64)
        if not uniform(rows):
            raise SWAStreamError("flush: the rows are at different points of their streams; pass with_lengths=True")
        return y


# What a mismatched state field says about the config it was made for.
STATE_FIELDS = {
    "k": "window, dilation, adaptive span, n_heads or d_model", "v": "window, dilation, n_heads or d_model",
    "pending_x": "window (right) or d_model", "pending_q": "window (right), n_heads or d_model",
    "pending_g": "global_tokens", "global_max": "global_tokens", "global_sum": "global_tokens",
    "global_acc": "global_tokens", "sink_k": "sink_tokens", "sink_v": "sink_tokens", "pool": "downsample",
}
