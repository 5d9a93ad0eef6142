"""The attention layer: projections, rotary positions, the variants' parameters, and a call into the kernels.

A plain window goes to the fast kernels (Triton or the blocked CPU path). A dilated window alone is the
same kernels on each residue class. With Triton, sinks and global tokens are merged into the window's
output through its log-sum-exp; otherwise (the CPU path, adaptive spans, and streaming steps) they go to
the variants' PyTorch path, which puts window keys, sinks and global tokens in one softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module

from swa_stream.config import SWAConfig
from swa_stream.extras import summaries_at
from swa_stream.kernels import (
    NEG,
    dilated_attention,
    extended_attention,
    fused_linear,
    merge_extras,
    prefix_summary,
    ring_read,
    ring_window_attention,
    rotate_qk,
    sliding_window_attention,
    triton_attention_lse,
    use_triton,
)
from swa_stream.positions import RotaryPositions


def stock(*modules: nn.Module) -> bool:
    """Are these modules torch's own, with no hooks on them and no global module hooks: then using their
    tensors directly is what calling them would do."""
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return False
    return all(type(m) in (nn.Linear, nn.GELU, nn.LayerNorm, nn.Sequential) and not m._forward_hooks
               and not m._forward_pre_hooks for m in modules)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear, by oneDNN's fused linear where that applies (long runs on the CPU without autograd:
    kernels/linear.py), the same numbers."""
    y = fused_linear(x, weight, bias)
    return F.linear(x, weight, bias) if y is None else y


def apply_linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x), as `linear` for a stock nn.Linear."""
    if type(module) is nn.Linear and stock(module):
        return linear(x, module.weight, module.bias)
    return module(x)


def apply_ffn(ffn: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """ffn(x) for a stock Linear -> exact GELU -> Linear, the first product and the GELU fused where that
    applies (`apply_linear`); any other ffn is called as it is."""
    parts = list(ffn)
    if len(parts) == 3 and stock(ffn, *parts) and type(parts[0]) is type(parts[2]) is nn.Linear \
            and type(parts[1]) is nn.GELU and parts[1].approximate == "none":
        h = fused_linear(x, parts[0].weight, parts[0].bias, gelu=True)
        if h is not None:
            return linear(h, parts[2].weight, parts[2].bias)
    return ffn(x)

# Parameters that only the variants have; a plain model's weights can start a variant without them.
VARIANT_PARAMETERS = ("global_query", "global_key", "span")


def span_reach(span: torch.Tensor, reach_left: int, ramp: int) -> list[int]:
    """Keys back that each head sees, for learned spans (H,) given as fractions of the left reach: the ramp
    is nonzero below ramp + z, with z = span * reach_left."""
    z = (span.detach().float().clamp(0, 1) * reach_left).tolist()
    return [min(reach_left, math.ceil(ramp + s) - 1) for s in z]


def _as_extra_values(summaries: torch.Tensor | None, dtype) -> torch.Tensor | None:
    """Global summaries (B, H, G, Tq, D) as the per-query values of extra keys (B, H, Tq, G, D)."""
    return None if summaries is None else summaries.transpose(2, 3).to(dtype)


@dataclass
class Projection:
    """One run of positions, projected: rotated q, k (B, H, T, D), v, and for global tokens the scores
    each query gives them (B, H, T, G) and the scores they give each key (B, H, G, T)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    to_global: torch.Tensor | None = None
    from_global: torch.Tensor | None = None


class SWAAttention(nn.Module):
    """Multi-head attention restricted to one layer's (left, right) window, plus its variants."""

    def __init__(self, cfg: SWAConfig, layer: int, backend: str = "auto"):
        super().__init__()
        self.window = cfg.windows[layer]
        self.dilation = cfg.dilations[layer]
        self.reach = cfg.reaches[layer]
        self.n_sinks, self.n_global = cfg.sink_tokens, cfg.global_tokens
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.backend = backend
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.rope = RotaryPositions(cfg.head_dim, cfg.rope_base)
        if self.n_global:
            # Position-free (unrotated) query and key of each global token, per head.
            shape = (cfg.n_heads, self.n_global, cfg.head_dim)
            self.global_query = nn.Parameter(torch.randn(shape) * cfg.head_dim**-0.5)
            self.global_key = nn.Parameter(torch.randn(shape) * cfg.head_dim**-0.5)
        self.span_ramp = cfg.span_ramp
        # Adaptive span: each head's learned reach back as a fraction of the window, starting at all of it.
        # A fraction, not positions, so that an optimiser's step moves every window size alike (Sukhbaatar
        # et al. also learn z / S).
        self.span = nn.Parameter(torch.ones(cfg.n_heads)) if cfg.adaptive_span else None

    @property
    def plain(self) -> bool:
        return not (self.n_sinks or self.n_global or self.span is not None)

    # ---- adaptive span ---------------------------------------------------------------------------
    def span_bias(self) -> torch.Tensor | None:
        """(H, left reach + 1): log of the soft ramp m(x) = clamp((ramp + z - x) / ramp, 0, 1) at distance
        x = 0 .. left reach (Sukhbaatar et al. 2019); masking with m and renormalising is adding log m."""
        if self.span is None:
            return None
        z = self.span.clamp(0, 1) * self.reach[0]
        x = torch.arange(self.reach[0] + 1, device=z.device, dtype=z.dtype)
        m = ((self.span_ramp + z[:, None] - x[None, :]) / self.span_ramp).clamp(0, 1)
        return torch.where(m > 0, m.clamp_min(1e-30).log(), torch.full_like(m, NEG))

    def cache_left(self) -> int:
        """Keys back that a stream must keep: the left reach, or the widest head's learned span."""
        return max(self.head_spans())

    def head_spans(self) -> list[int]:
        """Keys back each head sees (its ramp included)."""
        if self.span is None:
            return [self.reach[0]] * self.n_heads
        return span_reach(self.span, self.reach[0], self.span_ramp)

    # ---- projections -----------------------------------------------------------------------------
    def project(self, x: torch.Tensor, start: int | list[int]) -> Projection:
        """x (B, T, d_model) at absolute positions start.. (one start, or one per row) -> a Projection."""
        batch, length, _ = x.shape
        flat = apply_linear(self.qkv, x)
        qkv = flat.view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if isinstance(start, int):
            cos, signed_sin = self.rope.full_tables(start, length, x.dtype)
            rotated = rotate_qk(flat, cos, signed_sin, self.n_heads)  # one pass of C on the CPU, else None
        else:
            cos, signed_sin = self.rope.full(*self.rope.tables(start, length, x.dtype))
            rotated = None
        q, k = rotated or self.rope.rotate_full(qkv[:2], cos, signed_sin).unbind(0)  # q and k in one pass
        p = Projection(q, k, qkv[2])
        if self.n_global:
            scale = self.head_dim**-0.5
            p.to_global = torch.einsum("bhtd,hgd->bhtg", qkv[0], self.global_key) * scale  # unrotated:
            p.from_global = torch.einsum("bhtd,hgd->bhgt", qkv[1], self.global_query) * scale  # position-free
        return p

    # ---- offline ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention of a whole (normalised) sequence x (B, T, d_model) -> (B, T, d_model)."""
        p = self.project(x, start=0)
        summaries = None
        if p.from_global is not None:  # each query reads the summary after its newest key
            summaries = summaries_at(prefix_summary(p.from_global, p.v)[0], self.reach[1], lengths)
        return self.attend(p, lengths, summaries)

    def attend(self, p: Projection, lengths: torch.Tensor | None = None, summaries=None) -> torch.Tensor:
        """Self-attention of a whole sequence -> (B, T, d_model). summaries (B, H, G, T, D): what each
        global token holds when each query reads it (see SWABlock.forward)."""
        q, k, v = p.q, p.k, p.v
        if self.plain and self.dilation == 1:
            o = sliding_window_attention(q, k, v, self.window, backend=self.backend, k_lengths=lengths)
        elif self.plain:
            def kernel(q, k, v, window, k_lengths):
                return sliding_window_attention(q, k, v, window, backend=self.backend, k_lengths=k_lengths)

            o = dilated_attention(q, k, v, self.window, self.dilation, k_lengths=lengths, attend=kernel)
        else:
            sinks = None
            if self.n_sinks:
                index = torch.arange(min(self.n_sinks, k.shape[2]), device=q.device)
                sinks = (k[:, :, : len(index)], v[:, :, : len(index)], index)
            if self.span is None and use_triton(self.backend, q, k, v):
                o = self._triton_composed(p, summaries, sinks, lengths)
            else:
                o = self._extended(q, k, v, p.to_global, summaries, sinks=sinks, k_lengths=lengths)
        return self._merge(o)

    def _triton_composed(self, p: Projection, summaries, sinks, lengths) -> torch.Tensor:
        """Sinks and global tokens on the Triton path: the window (per residue class if dilated) with its
        log-sum-exp, then one softmax over it, the sinks and the global tokens."""
        if self.dilation == 1:
            o, lse = triton_attention_lse(p.q, p.k, p.v, self.window, k_lengths=lengths)
        else:
            o, lse = dilated_attention(p.q, p.k, p.v, self.window, self.dilation, k_lengths=lengths,
                                       attend=triton_attention_lse)
        extra_values = _as_extra_values(summaries, p.q.dtype)
        return merge_extras(o, lse, p.q, self.window, dilation=self.dilation, k_lengths=lengths, sinks=sinks,
                            extra_logits=p.to_global, extra_values=extra_values)

    def _extended(self, q, k, v, to_global, summaries, **placement) -> torch.Tensor:
        extra_values = _as_extra_values(summaries, q.dtype)
        return extended_attention(
            q, k, v, self.window, dilation=self.dilation, span_bias=self.span_bias(),
            extra_logits=to_global, extra_values=extra_values, **placement,
        )

    # ---- streaming -------------------------------------------------------------------------------
    def attend_ring(self, q, k_ring, v_ring, k_new, v_new, *, end, stream_start, new_counts=None,
                    to_global=None, summaries=None, sinks=None) -> torch.Tensor:
        """A streaming step: q at positions end - right reach .. over the ring (positions end - C .. end - 1)
        plus new keys (end ..) -> (B, Tq, d_model). `end` and `stream_start` are one integer or one per row
        (a ragged batch: then row b's first new_counts[b] new keys are valid). sinks = (k, v) of the
        stream's first positions; to_global / summaries as in `attend`, for these queries."""
        if self.plain and self.dilation == 1:
            o = ring_window_attention(q, k_ring, v_ring, k_new, v_new, self.window, end=end,
                                      stream_start=stream_start, new_counts=new_counts, backend=self.backend)
            return self._merge(o)
        batch, capacity = q.shape[0], k_ring.shape[2]
        ends = [end] * batch if isinstance(end, int) else list(end)
        starts = [stream_start] * batch if isinstance(stream_start, int) else list(stream_start)
        keys = torch.cat([ring_read(k_ring, end), k_new], dim=2)
        values = torch.cat([ring_read(v_ring, end), v_new], dim=2)
        # Key index 0 is position end - C: each row's first valid key, and its sinks' key indices.
        first = torch.tensor([max(0, s - (e - capacity)) for s, e in zip(starts, ends, strict=True)])
        k_lengths = None if new_counts is None else torch.tensor([capacity + c for c in new_counts])
        if sinks is not None:
            offset = torch.tensor([s - (e - capacity) for s, e in zip(starts, ends, strict=True)], device=q.device)
            sinks = (sinks[0], sinks[1], offset[:, None] + torch.arange(sinks[0].shape[2], device=q.device))
        o = self._extended(q, keys, values, to_global, summaries, sinks=sinks, q_offset=capacity - self.reach[1],
                           k_start=first.to(q.device), k_lengths=k_lengths)
        return self._merge(o)

    def _merge(self, o: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = o.shape
        return apply_linear(self.out, o.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim))
