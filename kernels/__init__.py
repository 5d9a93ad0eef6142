"""Sliding-window attention behind one entry point.

Semantics (FlashAttention's `window_size` convention): query row i sits at key index
`q_offset + i` and attends key j iff `q_offset + i - left <= j <= q_offset + i + right`, and the key
is valid: `k_start <= j < k_lengths[b]` (default: all Nk keys). A row that sees no valid key returns
zeros. Self-attention over one sequence is the default `q_offset=0`; the streaming encoder uses
`q_offset` to place a chunk of queries after its cached keys.
"""

from __future__ import annotations

import torch

from swa_stream.kernels.cpu import blocked_attention
from swa_stream.kernels.reference import attention_reference

BACKENDS = ("auto", "torch", "reference")


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window) -> tuple[int, int]:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, N, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape; got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on B, H or D")
    if len(window) != 2 or min(window) < 0:
        raise ValueError(f"window must be (left, right) with both >= 0; got {window!r}")
    return int(window[0]), int(window[1])


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    *,
    q_offset: int = 0,
    k_start: int = 0,
    k_lengths: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention of q (B, H, Nq, D) over k, v (B, H, Nk, D) inside a (left, right) window.

    backend: "auto" and "torch" use the blocked O(N * W) PyTorch path; "reference" is the dense
    masked O(Nq * Nk) definition, for tests.
    """
    window = _check(q, k, v, window)
    kwargs = dict(q_offset=q_offset, k_start=k_start, k_lengths=k_lengths, scale=scale)
    if backend == "reference":
        return attention_reference(q, k, v, window, **kwargs)
    if backend in ("auto", "torch"):
        return blocked_attention(q, k, v, window, **kwargs)
    raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}; got {backend!r}")


__all__ = ["BACKENDS", "sliding_window_attention", "attention_reference", "blocked_attention"]
