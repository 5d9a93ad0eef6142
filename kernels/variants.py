"""Attention for the variants (docs/variants.md): dilated windows, attention sinks, global tokens and
adaptive spans, all inside one softmax, plus the running summary that global tokens carry.

Semantics, extending kernels/__init__.py's: query row i stands at key index i' = q_offset + i and sees
- key j through the window iff `-right * d <= i' - j <= left * d` and `(i' - j) % d == 0` (dilation d;
  `window` counts dilated steps, so `(16, 0)` with d = 4 reaches 64 keys back and sees 17 of them);
- sink key j iff j <= i' (sinks are the first positions of a stream: every later position sees them);
- every "extra" key, which carries its own value per query (global tokens: B, H, Nq, E);
and a key is valid iff `k_start <= j < k_lengths[b]`. `span_bias` (H, left * d + 1) is added to the
score of a window key at distance i' - j = 0 .. left * d: adaptive span's soft ramp, as a log-mask.

`extended_attention` is plain PyTorch (blocked over queries, O(N * window) time and memory), so it runs and
differentiates on CPU and CUDA alike. The Triton kernels know only plain windows, so the variants reach
them by composition, without a kernel change:
- a dilated window is plain attention on each residue class mod d (`dilated_attention`);
- sinks and global tokens are merged into a window's output through its log-sum-exp (`merge_extras`),
  which the Triton kernel returns and differentiates (its backward takes the log-sum-exp's gradient).
Adaptive span's bias on each distance has no such decomposition; it stays on the PyTorch path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEG = -1e30  # a masked score: finite, so a row without visible keys stays NaN-free (we zero it after)


def _window_mask(delta: torch.Tensor, reach: tuple[int, int], dilation: int) -> torch.Tensor:
    """May a query see a key at distance delta = query index - key index through its window?"""
    left, right = reach
    return (delta <= left) & (delta >= -right) & (delta % dilation == 0)


def _sees_sinks(query_index: torch.Tensor, sink_index: torch.Tensor, reach, dilation: int, hi: torch.Tensor):
    """(B, *query_index.shape, S): may each query see each sink? A sink is seen from its own position on,
    unless the window already shows it (it counts once), and only if it is a valid key (< hi[b]).
    sink_index is (S,), or (B, S) when each row's sinks sit at their own key indices (a ragged step)."""
    q = query_index[None, ..., None]
    sink_index = sink_index.view(-1, *[1] * query_index.dim(), sink_index.shape[-1])
    seen = (sink_index <= q) & ~_window_mask(q - sink_index, reach, dilation)
    return seen & (sink_index < hi.view(-1, *[1] * (q.dim() - 1)))


def _valid_end(k_lengths: torch.Tensor | None, batch: int, n_k: int, device) -> torch.Tensor:
    """(B,): one past the last valid key of each row."""
    return torch.full((batch,), n_k, device=device) if k_lengths is None else k_lengths.to(device).clamp(max=n_k)


def extended_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    *,
    dilation: int = 1,
    q_offset: int = 0,
    k_start: int = 0,
    k_lengths: torch.Tensor | None = None,
    span_bias: torch.Tensor | None = None,
    sinks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    extra_logits: torch.Tensor | None = None,
    extra_values: torch.Tensor | None = None,
    scale: float | None = None,
    block: int = 32,
) -> torch.Tensor:
    """q (B, H, Nq, D) over k, v (B, H, Nk, D) -> (B, H, Nq, D); see the module docstring.

    sinks = (sink_k, sink_v, sink_index): keys (B, H, S, D), their values, and their key indices (S,), or
    (B, S) per row. k_start is one integer, or a (B,) tensor (a ragged step: each row's first valid key).
    extra_logits (B, H, Nq, E) are the (already scaled) scores of the extra keys; extra_values
    (B, H, Nq, E, D) their values.
    """
    batch, heads, n_q, dim = q.shape
    n_k = k.shape[2]
    if n_q == 0:
        return q.new_zeros(q.shape)
    scale = dim**-0.5 if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)
    reach = (window[0] * dilation, window[1] * dilation)
    blk = max(1, min(block, n_q))
    n_blk = -(-n_q // blk)
    span = blk + reach[0] + reach[1]
    first = q_offset - reach[0]  # key index of block 0's first slab key
    last = first + (n_blk - 1) * blk + span  # one past the last slab key
    pad_lo, pad_hi = max(0, -first), max(0, last - n_k)
    lo = first + pad_lo

    def slabs(t):  # (B, H, n_blk, span, D), overlapping views of the padded keys
        t = F.pad(t.to(acc), (0, 0, pad_lo, pad_hi))[:, :, lo : lo + last - first]
        return t.unfold(2, span, blk).transpose(-1, -2)

    qb = F.pad(q.to(acc), (0, 0, 0, n_blk * blk - n_q)).view(batch, heads, n_blk, blk, dim)
    scores = torch.einsum("bhnqd,bhnkd->bhnqk", qb, slabs(k)) * scale
    rows, cols = torch.arange(blk, device=q.device), torch.arange(span, device=q.device)
    delta = rows[:, None] + reach[0] - cols[None, :]  # same for every block
    key_index = first + torch.arange(n_blk, device=q.device)[:, None] * blk + cols[None, :]  # (n_blk, span)
    hi = _valid_end(k_lengths, batch, n_k, q.device)
    first_valid = torch.as_tensor(k_start, device=q.device).clamp(min=0).view(-1, 1, 1)  # one, or one per row
    valid = (key_index[None] >= first_valid) & (key_index[None] < hi.view(-1, 1, 1))  # (B, n_blk, span)
    mask = _window_mask(delta, reach, dilation)[None, None] & valid[:, None, :, None, :]  # (B, 1, n_blk, blk, span)
    if span_bias is not None:
        bias = span_bias.to(acc)[:, delta.clamp(0, reach[0])] * (delta >= 0)  # (H, blk, span)
        scores = scores + bias[None, :, None]
    parts, masks = [scores.masked_fill(~mask, NEG)], [mask.expand(-1, heads, -1, -1, -1)]

    query_index = (q_offset + torch.arange(n_blk * blk, device=q.device)).view(n_blk, blk)
    if sinks is not None:
        sink_k, sink_v, sink_index = sinks
        seen = _sees_sinks(query_index, sink_index.to(q.device), reach, dilation, hi)  # (B, n_blk, blk, S)
        sink_scores = torch.einsum("bhnqd,bhsd->bhnqs", qb, sink_k.to(acc)) * scale
        parts.append(sink_scores.masked_fill(~seen[:, None], NEG))
        masks.append(seen[:, None].expand(-1, heads, -1, -1, -1))
    if extra_logits is not None:
        pad = n_blk * blk - n_q
        logits = F.pad(extra_logits.to(acc), (0, 0, 0, pad)).view(batch, heads, n_blk, blk, -1)
        parts.append(logits)
        masks.append(torch.ones_like(logits, dtype=torch.bool))

    probs = torch.softmax(torch.cat(parts, dim=-1), dim=-1)
    probs = probs * torch.cat(masks, dim=-1).any(-1, keepdim=True)  # a row that sees nothing returns 0
    probs = probs.split([p.shape[-1] for p in parts], dim=-1)
    out = torch.einsum("bhnqk,bhnkd->bhnqd", probs[0], slabs(v))
    if sinks is not None:
        out = out + torch.einsum("bhnqs,bhsd->bhnqd", probs[1], sinks[1].to(acc))
    if extra_logits is not None:
        values = F.pad(extra_values.to(acc), (0, 0, 0, 0, 0, n_blk * blk - n_q))
        out = out + torch.einsum("bhnqe,bhnqed->bhnqd", probs[-1], values.view(batch, heads, n_blk, blk, -1, dim))
    return out.reshape(batch, heads, n_blk * blk, dim)[:, :, :n_q].to(q.dtype)


def dilated_attention(q, k, v, window, dilation: int, *, k_lengths=None, attend):
    """Self-attention (Nq = Nk = T, q_offset 0) with a dilated window, as plain windowed attention on each
    residue class mod `dilation`: positions r, r + d, r + 2d, ... see each other with the same
    (left, right) window counted in steps. `attend(q, k, v, window, k_lengths=...)` is any plain kernel;
    if it returns (o, log-sum-exp), so does this."""
    batch, heads, length, dim = q.shape
    d = dilation
    padded = -(-length // d) * d

    def fold(t):  # (B, H, T, D) -> (B * d, H, T / d, D), residue class r of batch element b at b * d + r
        t = F.pad(t, (0, 0, 0, padded - length)).view(batch, heads, padded // d, d, dim)
        return t.permute(0, 3, 1, 2, 4).reshape(batch * d, heads, padded // d, dim)

    lengths = torch.full((batch,), length, device=q.device) if k_lengths is None else k_lengths.to(q.device)
    residues = torch.arange(d, device=q.device)
    class_lengths = ((lengths[:, None] - residues[None, :] + d - 1) // d).clamp(min=0).reshape(-1)
    out = attend(fold(q), fold(k), fold(v), window, k_lengths=class_lengths)

    def unfold(t):  # (B * d, H, T / d, ...) -> (B, H, T, ...)
        t = t.view(batch, d, heads, padded // d, *t.shape[3:]).transpose(1, 2).transpose(2, 3)
        return t.reshape(batch, heads, padded, *t.shape[4:])[:, :, :length]

    return tuple(unfold(t) for t in out) if isinstance(out, tuple) else unfold(out)


def merge_extras(o, lse, q, window, *, dilation=1, k_lengths=None, sinks=None, extra_logits=None,
                 extra_values=None, scale=None) -> torch.Tensor:
    """Self-attention's window output o (B, H, N, D) with its natural log-sum-exp lse (B, H, N; -inf where a
    row saw nothing), merged in one softmax with sinks and extra keys (as in `extended_attention`)."""
    batch, heads, n, dim = q.shape
    scale = dim**-0.5 if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = [lse.to(acc)[..., None]]
    if sinks is not None:
        sink_k, _, sink_index = sinks
        reach = (window[0] * dilation, window[1] * dilation)
        hi = _valid_end(k_lengths, batch, n, q.device)
        seen = _sees_sinks(torch.arange(n, device=q.device), sink_index, reach, dilation, hi)  # (B, N, S)
        s = torch.einsum("bhnd,bhsd->bhns", q.to(acc), sink_k.to(acc)) * scale
        scores.append(s.masked_fill(~seen[:, None], float("-inf")))
    if extra_logits is not None:
        scores.append(extra_logits.to(acc))
    scores = torch.cat(scores, dim=-1)
    top = scores.detach().amax(-1, keepdim=True)
    weights = torch.exp(scores - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(acc).tiny)
    out, i = weights[..., :1] * o.to(acc), 1
    if sinks is not None:
        count = sinks[0].shape[2]
        out = out + torch.einsum("bhns,bhsd->bhnd", weights[..., i : i + count], sinks[1].to(acc))
        i += count
    if extra_logits is not None:
        out = out + torch.einsum("bhne,bhned->bhnd", weights[..., i:], extra_values.to(acc))
    return out.to(q.dtype)


def prefix_summary(logits: torch.Tensor, values: torch.Tensor, carry=None):
    """Global tokens' running softmax over a stream. logits (B, H, G, T): each global token's score of
    each new position; values (B, H, T, D). For every new position t, the summary of all positions so far
    up to t: sum_j softmax(logits)_j * v_j, as (B, H, G, T, D). carry = (max, sum, weighted value) of the
    positions before, (B, H, G) twice and (B, H, G, D), or None at the start; returns the new carry.
    Computed in float64, so that one pass over a whole sequence equals any chunked pass to ~1e-12.

    Each prefix is normalised by its own running sum, never by one scale for the whole pass: exp(-745) is
    0 in float64, so scaling by the pass's largest score turned every prefix more than ~745 below it into
    0/0 offline, while a chunked pass (whose earlier chunks never saw that score) stayed finite. The log of
    each prefix's sum is a running log-sum-exp (torch.logcumsumexp, which keeps a running maximum), and
    every weight exp(score_j - log_sum_t), j <= t, is then at most 1. Weighting all pairs (j, t) would cost
    T^2, so positions go in blocks of b ~ T^(1/3): pairs within a block, then pairs of block ends (each
    block's end summarises all before it), ~2 T^(4/3) pairs in all, with no loop over positions."""
    a, v = logits.double(), values.double()
    if carry is None:
        m_prev = torch.full(a.shape[:3], -math.inf, dtype=a.dtype, device=a.device)
        l_prev = torch.zeros_like(m_prev)
        acc_prev = torch.zeros(*a.shape[:3], v.shape[-1], dtype=a.dtype, device=a.device)
    else:
        m_prev, l_prev, acc_prev = (t.double() for t in carry)
    n, lead = a.shape[-1], a.shape[:3]
    if n == 0:
        return a.new_zeros(*a.shape, v.shape[-1]), (m_prev, l_prev, acc_prev)
    # The positions before enter as one summary: the log of their sum, and their mean. An empty carry gets
    # a finite log whose weight is 0 (-inf would give NaN gradients in the scan).
    tiny, seen = torch.finfo(a.dtype).tiny, l_prev > 0
    carry_log = torch.where(seen, m_prev + torch.log(l_prev.clamp_min(tiny)), NEG)
    carry_mean = torch.where(seen[..., None], acc_prev / l_prev.clamp_min(tiny)[..., None], 0.0)
    log_sums = torch.logcumsumexp(torch.cat([carry_log[..., None], a], dim=-1), dim=-1)[..., 1:]  # (B, H, G, T)

    blk = n if n <= 16 else math.ceil(n ** (1 / 3))  # a streaming step's few positions: one block
    n_blk, pad = -(-n // blk), -n % blk
    a_b, l_b, v_b = a, log_sums, v
    if pad:  # padding keys have weight 0; padding queries are dropped
        a_b, v_b = F.pad(a, (0, pad), value=NEG), F.pad(v, (0, 0, 0, pad))
        l_b = torch.cat([log_sums, log_sums[..., -1:].expand(*lead, pad)], dim=-1)
    a_b, l_b = a_b.view(*lead, n_blk, blk), l_b.view(*lead, n_blk, blk)
    v_b = v_b.view(*v.shape[:2], 1, n_blk, blk, v.shape[-1])
    within = _weighted(a_b, v_b, l_b, torch.ones(blk, blk, dtype=torch.bool, device=a.device).tril())
    # What each block adds to: the carry for the first block, the previous block's end summary for the rest.
    before_log, before = carry_log[..., None], carry_mean[..., None, :]  # (B, H, G, 1) and (B, H, G, 1, D)
    if n_blk > 1:
        ends = l_b[..., -1]  # (B, H, G, n_blk)
        keys = torch.cat([before_log, ends], dim=-1)
        keys_values = torch.cat([before, within[..., -1, :]], dim=-2)
        upto = torch.ones(n_blk - 1, n_blk + 1, dtype=torch.bool, device=a.device).tril(1)
        end_summaries = _weighted(keys, keys_values, ends[..., :-1], upto)  # blocks 0 .. n_blk - 2
        before_log, before = keys[..., :-1], torch.cat([before, end_summaries], dim=-2)
    summary = within + (before_log[..., None] - l_b).exp()[..., None] * before[..., None, :]
    summary = summary.flatten(3, 4)[..., :n, :] if pad else summary.flatten(3, 4)
    m = torch.maximum(m_prev, a.amax(-1))
    total = torch.exp(log_sums[..., -1] - m)  # sum of exp(score - m) over every position so far
    return summary, (m, total, total[..., None] * summary[..., -1, :])


def _weighted(scores: torch.Tensor, values: torch.Tensor, log_sums: torch.Tensor, visible: torch.Tensor):
    """(..., Nt, D): sum over keys j that `visible` (Nt, Nj) shows query t of exp(scores_j - log_sums_t) *
    values_j. Each exponent that counts is <= 0; the others are masked before exp, so no inf, no NaN grad."""
    w = (scores[..., None, :] - log_sums[..., :, None]).masked_fill(~visible, -math.inf).exp()
    return w @ values
