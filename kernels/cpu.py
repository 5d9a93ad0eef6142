"""Blocked sliding-window attention on CPU: O(N * W) time and memory, forward and backward.

Queries are cut into blocks of `block` rows. Block i only needs the keys from
`q_offset + i*block - left` to `q_offset + (i+1)*block - 1 + right`: a slab of `span = block + left + right`
keys. `Tensor.unfold` presents the slabs as overlapping strided views of the keys, so none is copied, and
the blocks become the "heads" of PyTorch's fused CPU flash-attention kernel
(`aten::_scaled_dot_product_flash_attention_for_cpu`, what `F.scaled_dot_product_attention` runs on CPU).
That kernel tiles, takes the softmax in float32 even for bfloat16 inputs, and returns the log-sum-exp,
from which its backward recomputes the probabilities instead of storing them. It is a private op, so its
signature may change with PyTorch (pinned in pyproject.toml); the tests compare against the reference.

We call the kernel and its backward from an `autograd.Function` rather than let autograd run through
`unfold`: that would zero-fill and sum gradient slabs ~span/block times the size of k. Instead each
backward chunk's slab gradients are folded into one key-sized buffer.

Without autograd (inference, and every streaming step's long chunk) no log-sum-exp is needed, and the same
plan of blocks runs outside the `autograd.Function` (`_inference`). In float32 or float64, on more than one
thread and for slabs of at most 256 keys, each call is then batched products instead of the kernel: the
scores with the mask added (baddbmm), the softmax in place, the values (`_attend_slabs`). The kernel hardly
runs faster on a second thread at these small blocks, the products do: 0.50-0.96 of its time on two threads,
but 1.00-1.39 on one, where the kernel stays (benchmarks/slab_inference.py, docs/benchmarks.md).

Masks are additive (0 / -inf) in the query dtype, as the kernel requires. Blocks whose slab lies wholly
inside the valid keys share one (block, span) band mask; only blocks at the edges (before `k_start`,
past `k_lengths`, past either end of k) get their own. A row that sees no key comes back from the kernel
as zeros, with a zero log-sum-exp and zero gradients; the tests pin that behaviour down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_flash_forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward

# Backward calls are cut into chunks with at most this many bytes per gradient slab tensor (the kernel returns
# dk and dv slab by slab, ~span/block times the size of k). Bounds memory and keeps each fold in cache; a
# kernel call costs tens of microseconds (milliseconds when a busy core delays its threads), so not smaller.
GRAD_SLAB_BYTES = 16 * 2**20


def default_block(n_queries: int, window: tuple[int, int]) -> int:
    """Query rows per block: a quarter of the keys a row sees, so a slab wastes at most ~25% of its work
    on masked keys, but at least 32 rows (smaller products run slowly) and at most 256 (the waste is
    already small). Chosen by timing blocks of 16..512 rows at N = 16384, H = 4, D = 64, 128..2048 keys."""
    keys = window[0] + window[1] + 1
    return max(1, min(n_queries, 256, max(32, keys // 4)))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class _Geometry:
    """Where the blocks and slabs sit. Key indices are absolute; slab of block i starts at first + i*block."""

    block: int
    n_blocks: int
    span: int
    first: int  # key index of the first slab's first key
    reach: int  # left + right after clipping: a row sees slab positions row .. row + reach
    lo: int  # first valid key
    hi: tuple[int, ...]  # end of the valid keys, per batch element (one entry if all are equal)

    @property
    def n_padded(self) -> int:
        return (self.n_blocks - 1) * self.block + self.span


def _geometry(n_q, n_k, window, q_offset, k_start, k_lengths, block) -> _Geometry | None:
    """None when no query can see any key; otherwise the block layout.

    A window wider than the valid keys is clipped to them first: it cannot change what a row sees, and it
    keeps slabs (and padding) from growing with `left` or `right` instead of with the sequence.
    """
    left, right = window
    lo = max(k_start, 0)
    hi = (n_k,) if k_lengths is None else tuple(min(int(n), n_k) for n in k_lengths.tolist())
    if len(set(hi)) == 1:
        hi = hi[:1]
    first_q, last_q = q_offset, q_offset + n_q - 1
    if n_q == 0 or max(hi) <= lo or last_q + right < lo or first_q - left >= max(hi):
        return None
    left = min(left, max(0, last_q - lo))
    right = min(right, max(0, max(hi) - 1 - first_q))
    block = max(1, min(block or default_block(n_q, (left, right)), n_q))
    n_blocks = _ceil_div(n_q, block)
    return _Geometry(block, n_blocks, block + left + right, q_offset - left, left + right, lo, hi)


def _band(g: _Geometry, device) -> torch.Tensor:
    """(block, span) bool: may row r of a block see slab position s? (It may iff r <= s <= r + reach.)"""
    pos = torch.arange(g.span, device=device)
    row = torch.arange(g.block, device=device)[:, None]
    return (pos >= row) & (pos <= row + g.reach)


def _edge_mask(g: _Geometry, blocks: slice, hi: int, dtype, device) -> torch.Tensor:
    """Additive mask (1, n, block, span) for blocks whose slabs reach keys outside [lo, hi)."""
    key = g.first + torch.arange(blocks.start, blocks.stop, device=device)[:, None] * g.block
    key = key + torch.arange(g.span, device=device)
    visible = _band(g, device) & ((key >= g.lo) & (key < hi))[:, None, :]
    return torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, float("-inf"))[None]


def _plan(g: _Geometry, dtype, device) -> list[tuple[slice, slice, torch.Tensor]]:
    """Kernel calls as (batch slice, block slice, additive mask): one set for the whole batch when all
    sequences end at the same key, else one per batch element. Blocks left out see no key at all."""
    band = torch.zeros(g.block, g.span, dtype=dtype, device=device).masked_fill_(~_band(g, device), float("-inf"))
    if len(g.hi) == 1:
        return _plan_rows(g, slice(None), g.hi[0], band[None, None])
    return [call for b, hi in enumerate(g.hi) for call in _plan_rows(g, slice(b, b + 1), hi, band[None, None])]


def _plan_rows(g: _Geometry, batch: slice, hi: int, band: torch.Tensor) -> list[tuple[slice, slice, torch.Tensor]]:
    """Calls for batch elements whose valid keys are [lo, hi).

    Blocks [inner_start, inner_stop) have slabs wholly inside the valid keys and share the band mask, so
    only the few blocks at either edge need a mask of their own. Blocks whose slabs hold no valid key
    (padding past a short sequence, say) are skipped: their rows stay zero.
    """
    live_start = min(g.n_blocks, max(0, (g.lo - g.first - g.span) // g.block + 1))
    live_stop = max(live_start, min(g.n_blocks, _ceil_div(hi - g.first, g.block)))
    inner_start = min(live_stop, max(live_start, _ceil_div(g.lo - g.first, g.block)))
    inner_stop = max(inner_start, min(live_stop, (hi - g.span - g.first) // g.block + 1))
    calls = [(batch, slice(inner_start, inner_stop), band)] if inner_start < inner_stop else []
    for start, stop in ((live_start, inner_start), (inner_stop, live_stop)):
        if start < stop:
            calls.append((batch, slice(start, stop), _edge_mask(g, slice(start, stop), hi, band.dtype, band.device)))
    return calls


def _chunked(plan, max_blocks: int):
    """The same calls, each cut into runs of at most max_blocks blocks (masks sliced to match)."""
    for bs, blocks, mask in plan:
        for start in range(blocks.start, blocks.stop, max_blocks):
            stop = min(start + max_blocks, blocks.stop)
            per_block = mask.shape[1] > 1
            yield bs, slice(start, stop), mask[:, start - blocks.start : stop - blocks.start] if per_block else mask


def _slabs(x: torch.Tensor, g: _Geometry, blocks: slice) -> torch.Tensor:
    """Key slabs of `blocks` from x (B, H, Nk, D) as (B, H, n, span, D), overlapping strided views.

    They view x itself when their keys lie inside it, as all interior blocks' do; only edge blocks read
    from a copy of their few keys, zero-padded where the window hangs over either end of x.
    """
    begin = g.first + blocks.start * g.block
    length = (blocks.stop - blocks.start - 1) * g.block + g.span
    if 0 <= begin and begin + length <= x.shape[2]:
        keys = x.narrow(2, begin, length)
    else:
        keys = F.pad(x, (0, 0, -begin, begin + length - x.shape[2]))  # negative pads crop
    return keys.unfold(2, g.span, g.block).transpose(-1, -2)


def _fold_into(dst: torch.Tensor, slabs: torch.Tensor, step: int) -> None:
    """dst[..., i*step + s, :] += slabs[..., i, s, :]: the adjoint of `_slabs`, in ceil(span/step) adds.

    dst (b, H, >= ceil(span/step)*step + (n-1)*step, D), slabs (b, H, n, span, D).
    """
    b, h, n, span, d = slabs.shape
    for c in range(0, span, step):
        width = min(step, span - c)
        dst[:, :, c : c + n * step].view(b, h, n, step, d)[:, :, :, :width] += slabs[:, :, :, c : c + width]


def _to_blocks(x: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """(B, H, Nq, D) -> (B, H, n_blocks, block, D), zero rows appended; contiguous, as the kernel wants."""
    if x.shape[2] < g.n_blocks * g.block:
        x = F.pad(x, (0, 0, 0, g.n_blocks * g.block - x.shape[2]))
    return x.contiguous().unflatten(2, (g.n_blocks, g.block))


def _assemble(pieces: list, g: _Geometry, shape: tuple[int, ...], dtype) -> torch.Tensor:
    """Per-call results [(batch slice, block slice, (b, H, n, ...))] as one `shape` (B, H, n_blocks, ...)
    tensor, zeros where the plan skipped blocks. One `cat`, not a zero fill plus a copy per call: each is a
    parallel region, and a region costs milliseconds when another process keeps one of the cores busy."""
    groups = [slice(None)] if len(g.hi) == 1 else [slice(b, b + 1) for b in range(len(g.hi))]
    rows = []
    for batch in groups:
        parts = [(blocks, x) for bs, blocks, x in pieces if bs == batch]
        row_shape = (shape[0] if batch == slice(None) else 1, *shape[1:])
        rows.append(_assemble_row(parts, g.n_blocks, row_shape, dtype))
    return rows[0] if len(rows) == 1 else torch.cat(rows, 0)


def _assemble_row(parts: list, n_blocks: int, shape: tuple[int, ...], dtype) -> torch.Tensor:
    def gap(n: int) -> torch.Tensor:
        return torch.zeros(*shape[:2], n, *shape[3:], dtype=dtype)

    seq, done = [], 0
    for blocks, x in sorted(parts, key=lambda part: part[0].start):
        seq += [gap(blocks.start - done), x] if blocks.start > done else [x]
        done = blocks.stop
    seq += [gap(n_blocks - done)] if done < n_blocks else []
    return seq[0] if len(seq) == 1 else torch.cat(seq, 2)


# Blocks per batched product in `_attend_slabs`: about 1.5 MB of scores at a (32, 96) block, which stays in cache.
SLAB_RUN = 128
# Inference takes the batched products on more than one thread and slabs of at most this many keys; else the
# kernel (see the module docstring).
PRODUCTS_MAX_SPAN = 256


def products_pay(g: _Geometry) -> bool:
    """Will `_attend_slabs` beat the flash kernel at this geometry? On two threads it took 0.50-0.96 of the
    kernel's time for slabs of 64-160 keys, and 0.94-0.95 for 640; on one thread the kernel was faster
    (docs/benchmarks.md, "Attention without autograd")."""
    return torch.get_num_threads() > 1 and g.span <= PRODUCTS_MAX_SPAN


def _kernel_call(q_blocks, k_slabs, v_slabs, mask, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One call of the plan by the flash kernel: q_blocks (b, H, n, block, D), slabs (b, H, n, span, D) ->
    (output (b, H, n, block, D), log-sum-exp (b, H, n, block))."""
    heads = q_blocks.shape[1]
    o, lse = _flash_forward(q_blocks.flatten(0, 1), k_slabs.flatten(0, 1), v_slabs.flatten(0, 1), 0.0, False,
                            attn_mask=mask, scale=scale)
    return o.unflatten(0, (-1, heads)), lse.unflatten(0, (-1, heads))


def _attend_kernel(q_blocks, k_slabs, v_slabs, mask, scale: float) -> torch.Tensor:
    """`_kernel_call` without its log-sum-exp, for inference."""
    return _kernel_call(q_blocks, k_slabs, v_slabs, mask, scale)[0]


def _attend_slabs(q_blocks, k_slabs, v_slabs, mask, scale: float) -> torch.Tensor:
    """One call of the plan by batched products: q_blocks (b, H, n, block, D), slabs (b, H, n, span, D), mask
    (1, 1 or n, block, span) -> (b, H, n, block, D). Per run of SLAB_RUN blocks of one row and head: the scores
    by one product with the mask added (baddbmm), the softmax in place, and one product with the values.
    Rows that see no key (edge blocks only) come out as zeros, as the kernel gives them."""
    out = q_blocks.new_empty(q_blocks.shape)
    mask = mask[0]  # (1 or n, block, span): one for every block, or one each
    dead = (mask == float("-inf")).all(-1, keepdim=True)  # (1 or n, block, 1): rows that see no key
    dead = dead if dead.any() else None
    for q, k, v, o in zip(q_blocks.flatten(0, 1), k_slabs.flatten(0, 1), v_slabs.flatten(0, 1), out.flatten(0, 1),
                          strict=True):
        for start in range(0, q.shape[0], SLAB_RUN):
            run = slice(start, start + SLAB_RUN)
            each = slice(None) if mask.shape[0] == 1 else run
            scores = torch.baddbmm(mask[each], q[run], k[run].transpose(1, 2), alpha=scale)
            torch.bmm(torch.softmax(scores, -1, out=scores), v[run], out=o[run])
            if dead is not None:
                o[run].masked_fill_(dead[each], 0.0)
    return out


class _SlabAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g: _Geometry | None, scale: float):
        ctx.geometry, ctx.k_shape = g, k.shape
        if g is None:  # no row sees any key
            return torch.zeros_like(q)
        n_q = q.shape[2]
        q_blocks = _to_blocks(q, g)
        k, v = k.contiguous(), v.contiguous()  # so that slabs of all batches and heads flatten as views
        ctx.plan = _plan(g, q.dtype, q.device)
        outs, lses = [], []
        for bs, blocks, mask in ctx.plan:
            o, o_lse = _kernel_call(q_blocks[bs, :, blocks], _slabs(k[bs], g, blocks), _slabs(v[bs], g, blocks), mask,
                                    scale)
            outs.append((bs, blocks, o))
            lses.append((bs, blocks, o_lse))
        out = _assemble(outs, g, q_blocks.shape, q.dtype)
        lse = _assemble(lses, g, q_blocks.shape[:-1], lses[0][2].dtype)
        ctx.save_for_backward(q_blocks, k, v, out, lse)
        ctx.scale = scale
        return out.flatten(2, 3)[:, :, :n_q]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        g = ctx.geometry
        if g is None:
            return grad_out.new_zeros(grad_out.shape), *(grad_out.new_zeros(ctx.k_shape) for _ in "kv"), None, None
        q_blocks, k, v, out, lse = ctx.saved_tensors
        (batch, heads, n_k, dim), n_q = k.shape, grad_out.shape[2]
        grad_blocks = _to_blocks(grad_out, g)
        # Key gradients over the slabs' whole key range, from key index g.first on, plus one spare block:
        # `_fold_into` writes whole blocks and the last slab may end mid-block.
        grad_k, grad_v = (x.new_zeros(batch, heads, g.n_padded + g.block, dim) for x in (k, v))
        max_blocks = max(1, GRAD_SLAB_BYTES // (batch * heads * g.span * dim * k.element_size()))
        grad_qs = []
        for bs, blocks, mask in _chunked(ctx.plan, max_blocks):
            dq, dk, dv = _flash_backward(
                grad_blocks[bs, :, blocks].flatten(0, 1),
                q_blocks[bs, :, blocks].flatten(0, 1),
                _slabs(k[bs], g, blocks).flatten(0, 1),
                _slabs(v[bs], g, blocks).flatten(0, 1),
                out[bs, :, blocks].flatten(0, 1),
                lse[bs, :, blocks].flatten(0, 1),
                0.0,
                False,
                attn_mask=mask,
                scale=ctx.scale,
            )
            grad_qs.append((bs, blocks, dq.unflatten(0, (-1, heads))))
            keys = slice(blocks.start * g.block, None)
            _fold_into(grad_k[bs, :, keys], dk.unflatten(0, (-1, heads)), g.block)
            _fold_into(grad_v[bs, :, keys], dv.unflatten(0, (-1, heads)), g.block)
        grad_q = _assemble(grad_qs, g, q_blocks.shape, q_blocks.dtype)
        unpad = (0, 0, g.first, n_k - g.first - grad_k.shape[2])  # back to key indices 0 .. n_k - 1
        return grad_q.flatten(2, 3)[:, :, :n_q], F.pad(grad_k, unpad), F.pad(grad_v, unpad), None, None


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
    """Same contract as `attention_reference`; q (B, H, Nq, D), k and v (B, H, Nk, D) -> (B, H, Nq, D).

    block: query rows per block (a tuning knob; the default follows `default_block`).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    g = _geometry(q.shape[2], k.shape[2], window, q_offset, k_start, k_lengths, block)
    if q.dtype not in (torch.float32, torch.float64) or torch.is_grad_enabled() and any(
            x.requires_grad for x in (q, k, v)):  # low precision: the kernel's float32 softmax
        return _SlabAttention.apply(q, k, v, g, float(scale))
    return _inference(q, k, v, g, float(scale))


def _inference(q, k, v, g: _Geometry | None, scale: float, products: bool | None = None) -> torch.Tensor:
    """`_SlabAttention.forward` where no gradient is wanted: the same plan, without the log-sum-exp, each call
    by batched products or by the kernel (`products`; default: `products_pay`)."""
    if g is None:
        return torch.zeros_like(q)
    attend = _attend_slabs if (products_pay(g) if products is None else products) else _attend_kernel
    q_blocks, k, v = _to_blocks(q, g), k.contiguous(), v.contiguous()
    outs = [(bs, blocks, attend(q_blocks[bs, :, blocks], _slabs(k[bs], g, blocks), _slabs(v[bs], g, blocks), mask,
                                scale)) for bs, blocks, mask in _plan(g, q.dtype, q.device)]
    return _assemble(outs, g, q_blocks.shape, q.dtype).flatten(2, 3)[:, :, : q.shape[2]]
