"""Streaming step in Triton: windowed attention read straight out of the encoder's KV ring buffer.

The kernel sees one virtual key sequence: the C = left + right ring rows in position order, then the t new
rows. Virtual key j < C is position end - C + j, which lives in ring slot (end - C + j) mod C, so a
key block is gathered from the ring in place: no roll, no copy, no concatenation. Key j >= C is new row
j - C. Query row i (position end - right + i) sits at virtual index left + i, so it sees virtual keys
i .. i + C: the band is the same for every step, and only two small integers change: the ring slot of
the oldest position, and the first valid key (the stream start). Both are reduced in Python, so absolute
positions of any size never reach the kernel. Forward only: this is the inference path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from swa_stream.kernels.ring import ring_placement
from swa_stream.kernels.triton_swa import (
    DTYPES,
    FWD_SHAPES,
    LOG2E,
    _block_runs,
    _bucket,
    _configs,
    _last_dim_contiguous,
    _mma,
    _online_softmax,
    _prune,
    _visible,
)


@triton.jit
def _ring_rows(RING, NEW, offs_n, offs_d, stride_rn, stride_nn, n_ring, ring_first, k_end, TRANS: tl.constexpr):
    """Rows of virtual keys offs_n, as (BLOCK_N, D), or (D, BLOCK_N) if TRANS; zeros past k_end."""
    in_ring = offs_n < n_ring
    slot = ring_first + offs_n
    slot = tl.where(slot >= n_ring, slot - n_ring, slot)  # ring_first < C and offs_n < C: one wrap at most
    fresh = offs_n - n_ring
    in_new = (offs_n >= n_ring) & (offs_n < k_end)
    if TRANS:
        old = tl.load(RING + slot[None, :] * stride_rn + offs_d[:, None], mask=in_ring[None, :], other=0.0)
        new = tl.load(NEW + fresh[None, :] * stride_nn + offs_d[:, None], mask=in_new[None, :], other=0.0)
        return tl.where(in_ring[None, :], old, new)
    else:
        old = tl.load(RING + slot[:, None] * stride_rn + offs_d[None, :], mask=in_ring[:, None], other=0.0)
        new = tl.load(NEW + fresh[:, None] * stride_nn + offs_d[None, :], mask=in_new[:, None], other=0.0)
        return tl.where(in_ring[:, None], old, new)


@triton.jit
def _ring_inner(acc, l_i, m_i, q, KR, VR, KN, VN, stride_krn, stride_vrn, stride_knn, stride_vnn,
                offs_m, offs_d, lo, hi, n_ring, ring_first, k_start, k_end, qk_scale,
                MASKED: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kt = _ring_rows(KR, KN, offs_n, offs_d, stride_krn, stride_knn, n_ring, ring_first, k_end, True)
        v = _ring_rows(VR, VN, offs_n, offs_d, stride_vrn, stride_vnn, n_ring, ring_first, k_end, False)
        s = _mma(q, kt, None, PREC) * qk_scale
        if MASKED:
            s = tl.where(_visible(offs_m[:, None], offs_n[None, :], 0, n_ring, k_start, k_end), s, float("-inf"))
        acc, l_i, m_i = _online_softmax(acc, l_i, m_i, s, v, MASKED, PREC)
    return acc, l_i, m_i


@triton.autotune(configs=_configs(FWD_SHAPES), key=["N_ROWS_BUCKET", "N_COLS_BUCKET", "HEAD_DIM"],
                 prune_configs_by={"early_config_prune": _prune})
@triton.heuristics({"EVEN_M": lambda a: a["N_Q"] % a["BLOCK_M"] == 0})
@triton.jit(do_not_specialize=["H", "N_Q", "n_ring", "n_new", "ring_first", "k_start",
                               "N_ROWS_BUCKET", "N_COLS_BUCKET"])
def _ring_kernel(Q, KR, VR, KN, VN, Out,
                 stride_qb, stride_qh, stride_qm, stride_krb, stride_krh, stride_krn,
                 stride_vrb, stride_vrh, stride_vrn, stride_knb, stride_knh, stride_knn,
                 stride_vnb, stride_vnh, stride_vnn, stride_ob, stride_oh, stride_om,
                 H, N_Q, n_ring, n_new, ring_first, k_start, qk_scale,
                 N_ROWS_BUCKET, N_COLS_BUCKET,
                 HEAD_DIM: tl.constexpr, PREC: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr):
    bh = tl.program_id(0)  # many streams x heads, few query blocks: B * H goes on the unbounded axis
    start_m = tl.program_id(1)
    b = bh // H
    h = bh % H
    Q += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    KR += b.to(tl.int64) * stride_krb + h.to(tl.int64) * stride_krh
    VR += b.to(tl.int64) * stride_vrb + h.to(tl.int64) * stride_vrh
    KN += b.to(tl.int64) * stride_knb + h.to(tl.int64) * stride_knh
    VN += b.to(tl.int64) * stride_vnb + h.to(tl.int64) * stride_vnh
    Out += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    k_end = n_ring + n_new

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    if EVEN_M:
        q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :])
    else:
        q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :], mask=offs_m[:, None] < N_Q, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    first = start_m * BLOCK_M
    lo, fs, fe, hi = _block_runs(first, first + BLOCK_M - 1, 0, n_ring, k_start, k_end, BLOCK_N)
    acc, l_i, m_i = _ring_inner(acc, l_i, m_i, q, KR, VR, KN, VN, stride_krn, stride_vrn, stride_knn, stride_vnn,
                                offs_m, offs_d, lo, fs, n_ring, ring_first, k_start, k_end, qk_scale,
                                True, BLOCK_N, PREC)
    acc, l_i, m_i = _ring_inner(acc, l_i, m_i, q, KR, VR, KN, VN, stride_krn, stride_vrn, stride_knn, stride_vnn,
                                offs_m, offs_d, fs, fe, n_ring, ring_first, k_start, k_end, qk_scale,
                                False, BLOCK_N, PREC)
    acc, l_i, m_i = _ring_inner(acc, l_i, m_i, q, KR, VR, KN, VN, stride_krn, stride_vrn, stride_knn, stride_vnn,
                                offs_m, offs_d, fe, hi, n_ring, ring_first, k_start, k_end, qk_scale,
                                True, BLOCK_N, PREC)

    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]  # rows that saw nothing stay 0
    o_ptrs = Out + offs_m[:, None] * stride_om + offs_d[None, :]
    if EVEN_M:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty))
    else:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < N_Q)


def _check(q, k_ring, v_ring, k_new, v_new, window):
    assert all(t.dim() == 4 for t in (q, k_ring, v_ring, k_new, v_new)), "all tensors must be (B, H, N, D)"
    assert k_ring.shape == v_ring.shape and k_new.shape == v_new.shape, "k and v shapes differ"
    batch, heads, _, dim = q.shape
    for t in (k_ring, k_new):
        assert t.shape[:2] == (batch, heads) and t.shape[3] == dim, f"q {tuple(q.shape)} vs {tuple(t.shape)}"
    assert len(window) == 2 and min(window) >= 0, f"window must be (left, right) >= 0; got {window!r}"
    assert k_ring.shape[2] == window[0] + window[1], f"ring holds {k_ring.shape[2]} rows, not left + right"
    dtypes = {t.dtype for t in (q, k_ring, v_ring, k_new, v_new)}
    assert len(dtypes) == 1 and q.dtype in DTYPES, f"dtypes must match and be one of {DTYPES}; got {dtypes}"
    assert 16 <= dim <= 256 and dim & (dim - 1) == 0, f"head dim must be a power of two in [16, 256]; got {dim}"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k_ring, v_ring, k_new, v_new)):
        raise RuntimeError("triton_ring_attention is forward only: call it under torch.no_grad()")


def triton_ring_attention(
    q: torch.Tensor,
    k_ring: torch.Tensor,
    v_ring: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    window: tuple[int, int],
    *,
    end: int,
    stream_start: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Queries q (B, H, Tq, D) at positions end - right .. over the ring plus new keys -> (B, H, Tq, D).

    k_ring, v_ring (B, H, C, D), C = left + right: positions end - C .. end - 1, position p in slot p % C.
    k_new, v_new (B, H, t, D): positions end .. end + t - 1. A query at position p sees positions in
    [p - left, p + right] that are >= stream_start and < end + t; one that sees none gets zeros.
    """
    _check(q, k_ring, v_ring, k_new, v_new, window)
    q, k_ring, v_ring, k_new, v_new = (_last_dim_contiguous(t) for t in (q, k_ring, v_ring, k_new, v_new))
    batch, heads, n_q, dim = q.shape
    n_ring, n_new = k_ring.shape[2], k_new.shape[2]
    scale = dim**-0.5 if scale is None else float(scale)
    o = torch.empty_like(q)
    if o.numel() == 0 or n_ring + n_new == 0:
        return o.zero_()
    ring_first, k_start = ring_placement(window, int(end), int(stream_start), n_new)
    if n_ring == 0:  # never read, but the kernel wants real pointers
        k_ring, v_ring = k_new, v_new
    if n_new == 0:
        k_new, v_new = k_ring, v_ring

    def grid(meta):
        return (batch * heads, triton.cdiv(n_q, meta["BLOCK_M"]))

    _ring_kernel[grid](
        q, k_ring, v_ring, k_new, v_new, o,
        *q.stride()[:3], *k_ring.stride()[:3], *v_ring.stride()[:3], *k_new.stride()[:3], *v_new.stride()[:3],
        *o.stride()[:3],
        heads, n_q, n_ring, n_new, ring_first, k_start, scale * LOG2E,
        N_ROWS_BUCKET=_bucket(n_q), N_COLS_BUCKET=_bucket(n_ring + 1), HEAD_DIM=dim,
        PREC="ieee" if q.dtype == torch.float32 else "tf32",
    )
    return o


__all__ = ["triton_ring_attention", "ring_placement"]
