"""The attention layer: projections, rotary positions, and a call into the kernels."""

from __future__ import annotations

import torch
from torch import nn

from swa_stream.config import SWAConfig
from swa_stream.kernels import ring_window_attention, sliding_window_attention
from swa_stream.positions import RotaryPositions


class SWAAttention(nn.Module):
    """Multi-head attention restricted to one layer's (left, right) window."""

    def __init__(self, cfg: SWAConfig, layer: int, backend: str = "auto"):
        super().__init__()
        self.window = cfg.windows[layer]
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.backend = backend
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.rope = RotaryPositions(cfg.head_dim, cfg.rope_base)

    def project(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d_model) at absolute positions start.. -> rotated q, rotated k, v, each (B, H, T, D)."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = self.rope.tables(start, length, x.dtype)
        return self.rope.rotate(q, cos, sin), self.rope.rotate(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **placement) -> torch.Tensor:
        """Windowed attention of q over k, v (placement: q_offset, k_start, k_lengths) -> (B, Tq, d_model)."""
        return self._merge(sliding_window_attention(q, k, v, self.window, backend=self.backend, **placement))

    def attend_ring(self, q, k_ring, v_ring, k_new, v_new, *, end: int, stream_start: int) -> torch.Tensor:
        """A streaming step: q at positions end - right .. over the ring plus new keys -> (B, Tq, d_model)."""
        o = ring_window_attention(
            q, k_ring, v_ring, k_new, v_new, self.window, end=end, stream_start=stream_start, backend=self.backend
        )
        return self._merge(o)

    def _merge(self, o: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = o.shape
        return self.out(o.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim))
