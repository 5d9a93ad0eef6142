"""Blocked sliding-window attention in plain PyTorch: O(N * W) time and memory, with autograd.

Queries are cut into blocks of `block` rows. Block b only needs the keys from
`q_offset + b*block - left` to `q_offset + (b+1)*block - 1 + right`: a slab of `block + left + right`
keys. `Tensor.unfold` presents every slab as a strided view of the padded keys, so one batched matmul
scores all blocks at once. Within a slab the band is the same for every block, so its mask is one small
(block, span) matrix; only key validity (stream start, padding) varies by block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def default_block(n_queries: int, window: tuple[int, int]) -> int:
    """About half the window (wasted work ~ block / window), at least 16, at most 256 rows."""
    half_window = (window[0] + window[1] + 1) // 2
    return max(1, min(n_queries, max(16, min(256, half_window))))


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    *,
    q_offset: int = 0,
    k_start: int = 0,
    k_lengths: torch.Tensor | None = None,
    scale: float | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Same contract as `attention_reference`; q (B, H, Nq, D), k and v (B, H, Nk, D)."""
    left, right = window
    batch, heads, n_q, dim = q.shape
    n_k = k.shape[2]
    scale = dim**-0.5 if scale is None else scale
    if n_q == 0:
        return q.new_zeros(batch, heads, 0, dim)
    block = block or default_block(n_q, window)
    n_blocks = -(-n_q // block)
    span = block + left + right

    # Padded keys cover key indices [first, first + n_blocks*block + left + right); F.pad crops when
    # a pad is negative, so this works whichever way q_offset leans.
    first = q_offset - left
    pad_right = first + n_blocks * block + left + right - n_k
    k_slabs = F.pad(k, (0, 0, -first, pad_right)).unfold(2, span, block)  # (B, H, nb, D, span)
    v_slabs = F.pad(v, (0, 0, -first, pad_right)).unfold(2, span, block)
    q_blocks = F.pad(q, (0, 0, 0, n_blocks * block - n_q)).view(batch, heads, n_blocks, block, dim)

    acc = torch.promote_types(q.dtype, torch.float32)
    scores = (q_blocks @ k_slabs).to(acc) * scale  # (B, H, nb, block, span)

    s = torch.arange(span, device=q.device)
    i = torch.arange(block, device=q.device)
    band = (s[None, :] >= i[:, None]) & (s[None, :] <= i[:, None] + left + right)  # (block, span)
    key_index = first + torch.arange(n_blocks, device=q.device)[:, None] * block + s[None, :]
    valid = (key_index >= max(k_start, 0)) & (key_index < n_k)  # (nb, span)
    valid = valid[None]
    if k_lengths is not None:
        valid = valid & (key_index[None] < k_lengths.to(q.device).view(-1, 1, 1))
    visible = band[None, None] & valid[:, None, :, None, :]  # (B|1, 1, nb, block, span)

    scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no visible key is all-NaN
    out = probs.to(v.dtype) @ v_slabs.transpose(-1, -2)  # (B, H, nb, block, D)
    return out.reshape(batch, heads, n_blocks * block, dim)[:, :, :n_q]
