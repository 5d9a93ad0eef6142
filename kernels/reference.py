"""Dense masked attention: the definition of sliding-window attention, kept as the truth for tests.

It builds the full (Nq, Nk) mask, so it costs O(Nq * Nk): never call it on a long sequence.
"""

from __future__ import annotations

import torch


def visibility_mask(
    n_queries: int,
    n_keys: int,
    window: tuple[int, int],
    *,
    q_offset: int = 0,
    k_start: int = 0,
    k_lengths: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (B or 1, 1, Nq, Nk): may query row i see key j?

    Query row i stands at key index q_offset + i and sees key j iff
    `q_offset + i - left <= j <= q_offset + i + right` and `k_start <= j < k_lengths[b]`.
    """
    left, right = window
    qi = torch.arange(n_queries, device=device)[:, None] + q_offset
    kj = torch.arange(n_keys, device=device)[None, :]
    mask = (kj >= qi - left) & (kj <= qi + right) & (kj >= k_start)
    mask = mask[None, None]
    if k_lengths is not None:
        mask = mask & (kj[None, None] < k_lengths.to(device).view(-1, 1, 1, 1))
    return mask


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    *,
    q_offset: int = 0,
    k_start: int = 0,
    k_lengths: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention under `visibility_mask`, computed in (at least) float32; rows that see no key are 0."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = visibility_mask(
        q.shape[2], k.shape[2], window, q_offset=q_offset, k_start=k_start, k_lengths=k_lengths, device=q.device
    )
    acc = torch.promote_types(q.dtype, torch.float32)  # low precision in, float32 softmax
    scores = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no visible key is all-NaN
    return (probs @ v.to(acc)).to(q.dtype)


def variant_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    *,
    dilation: int = 1,
    n_sinks: int = 0,
    span_bias: torch.Tensor | None = None,
    extra_logits: torch.Tensor | None = None,
    extra_values: torch.Tensor | None = None,
    k_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-attention (B, H, N, D) under the variants' definition (kernels/variants.py), built densely:
    the full (N, N) mask and bias, the extra keys appended, one softmax. O(N^2): small shapes only."""
    n, scale = q.shape[2], q.shape[-1] ** -0.5
    left, right = window[0] * dilation, window[1] * dilation
    delta = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # query minus key
    in_window = (delta <= left) & (delta >= -right) & (delta % dilation == 0)
    sink = (torch.arange(n)[None, :] < n_sinks) & (delta >= 0)
    visible = (in_window | sink)[None, None]
    if k_lengths is not None:
        visible = visible & (torch.arange(n)[None, None, None, :] < k_lengths.view(-1, 1, 1, 1))
    scores = (q.double() @ k.double().transpose(-1, -2)) * scale
    if span_bias is not None:
        table = torch.zeros(q.shape[1], n, n, dtype=torch.float64)
        for i in range(n):
            for j in range(n):
                if in_window[i, j] and delta[i, j] >= 0:
                    table[:, i, j] = span_bias[:, delta[i, j]].double()
        scores = scores + table[None]
    scores = scores.masked_fill(~visible, float("-inf"))
    values = v.double()[:, :, None].expand(-1, -1, n, -1, -1)  # (B, H, N queries, N keys, D)
    if extra_logits is not None:
        scores = torch.cat([scores, extra_logits.double()], dim=-1)
        values = torch.cat([values, extra_values.double()], dim=3)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhqk,bhqkd->bhqd", probs, values).to(q.dtype)
