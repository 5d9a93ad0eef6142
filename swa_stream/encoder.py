"""SWAEncoder: a stack of pre-norm transformer blocks with sliding-window attention that runs either
offline (`forward`) or as a stream (`init_state` / `step` / `flush`) with identical outputs.

Streaming, per layer with window (left, right) = (L, R) and cache size C = L + R:

    keys/values cached   [b-C ............ b)   new chunk [b ........ b+t)
    queries answered now           [b-R ............ b+t-R)
    queries held back                                  [b+t-R .. b+t)

A query is answered once its R right neighbours exist, so layer i emits what it received less R_i,
and the stack delays every output by sum(R_i) input positions. `flush` answers the held-back queries
with the keys that exist, exactly as offline attention treats the end of a sequence.
"""

from __future__ import annotations

import torch
from torch import nn

from swa_stream.attention import SWAAttention
from swa_stream.config import SWAConfig
from swa_stream.kernels.ring import ring_write
from swa_stream.lengths import zero_past
from swa_stream.state import LayerState, StreamState


class SWABlock(nn.Module):
    """x + attn(norm(x)), then h + ffn(norm(h)); attention sees a (left, right) window."""

    def __init__(self, cfg: SWAConfig, layer: int, backend: str = "auto"):
        super().__init__()
        self.left, self.right = cfg.windows[layer]
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
        q, k, v = self.attn.project(self.norm1(x), start=0)
        return self._finish(x, self.attn.attend(q, k, v, k_lengths=lengths))

    def _answer(self, queries, resid, st: LayerState, k_new, v_new, end: int, stream_start: int) -> torch.Tensor:
        """Answer queries for positions end - R .. with the cached ring plus the new keys, and drop the rows
        of positions before the stream began (their slots were never written)."""
        attended = self.attn.attend_ring(queries, st.k, st.v, k_new, v_new, end=end, stream_start=stream_start)
        y = self._finish(resid, attended)
        skip = min(y.shape[1], max(0, stream_start - (end - self.right)))
        return y[:, skip:]

    def step(self, x: torch.Tensor, st: LayerState, b: int, stream_start: int) -> tuple[torch.Tensor, LayerState]:
        """Take inputs x (B, t, d) for positions b .. b+t-1; emit the positions that became final."""
        t = x.shape[1]
        q, k, v = self.attn.project(self.norm1(x), start=b)
        queries = torch.cat([st.pending_q, q], dim=2)  # positions b-R .. b+t-1
        resid = torch.cat([st.pending_x, x], dim=1)
        y = self._answer(queries[:, :, :t], resid[:, :t], st, k, v, b, stream_start)
        new = LayerState(  # clones: a view would keep this whole chunk alive inside the state
            k=ring_write(st.k, k, end=b + t),
            v=ring_write(st.v, v, end=b + t),
            pending_x=resid[:, t:].clone(),
            pending_q=queries[:, :, t:].clone(),
        )
        return y, new

    def finish(self, st: LayerState, b: int, stream_start: int) -> torch.Tensor:
        """Answer the held-back queries (positions b-R .. b-1) with the keys that exist: the end of stream."""
        none = st.k[:, :, :0]
        return self._answer(st.pending_q, st.pending_x, st, none, none, b, stream_start)


class SWAEncoder(nn.Module):
    """(B, T, d_model) -> (B, T, d_model), offline or streamed; see the module docstring."""

    def __init__(self, cfg: SWAConfig, backend: str = "auto"):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(SWABlock(cfg, i, backend) for i in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

    def receptive_field(self) -> tuple[int, int]:
        """(left, right) input positions that reach each output, over all layers."""
        return self.cfg.receptive_field()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, d_model); lengths (B,) valid lengths. Rows past a length come out as zeros."""
        for block in self.blocks:
            x = block(x, lengths)
        y = self.norm(x)
        return y if lengths is None else zero_past(y, lengths)

    # ---- streaming -----------------------------------------------------------------------------
    def init_state(
        self, batch_size: int, start_position: int = 0, device=None, dtype=None
    ) -> StreamState:
        """Empty state for `batch_size` streams whose first input has absolute position `start_position`."""
        ref = self.norm.weight
        device, dtype = device or ref.device, dtype or ref.dtype
        cfg, zeros = self.cfg, lambda *shape: torch.zeros(*shape, device=device, dtype=dtype)
        layers = [
            LayerState(
                k=zeros(batch_size, cfg.n_heads, left + right, cfg.head_dim),
                v=zeros(batch_size, cfg.n_heads, left + right, cfg.head_dim),
                pending_x=zeros(batch_size, right, cfg.d_model),
                pending_q=zeros(batch_size, cfg.n_heads, right, cfg.head_dim),
            )
            for left, right in cfg.windows
        ]
        return StreamState(start=int(start_position), received=0, layers=layers)

    def _check_chunk(self, chunk: torch.Tensor, state: StreamState) -> None:
        if chunk.dim() != 3 or chunk.shape[0] != state.batch_size or chunk.shape[2] != self.cfg.d_model:
            raise ValueError(
                f"chunk must be (B={state.batch_size}, t, d_model={self.cfg.d_model}); got {tuple(chunk.shape)}"
            )

    def step(self, chunk: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """Feed chunk (B, t, d_model); return (the positions that became final, the next state)."""
        self._check_chunk(chunk, state)
        x, layers = chunk, []
        received = state.layer_inputs_received([r for _, r in self.cfg.windows])
        for block, st, n in zip(self.blocks, state.layers, received, strict=True):
            if x.shape[1] == 0:  # nothing new reaches this layer yet
                layers.append(st)
                continue
            x, st = block.step(x, st, state.start + n, state.start)
            layers.append(st)
        return self.norm(x), StreamState(state.start, state.received + chunk.shape[1], layers)

    def flush(self, state: StreamState) -> torch.Tensor:
        """Finish the stream: emit every held-back position, as offline does at the end of a sequence."""
        received = state.layer_inputs_received([r for _, r in self.cfg.windows])
        x = state.layers[0].pending_x[:, :0]
        for block, st, n in zip(self.blocks, state.layers, received, strict=True):
            b = state.start + n
            if x.shape[1]:
                emitted, st = block.step(x, st, b, state.start)
                b += x.shape[1]
            else:
                emitted = x
            x = torch.cat([emitted, block.finish(st, b, state.start)], dim=1)
        return self.norm(x)
