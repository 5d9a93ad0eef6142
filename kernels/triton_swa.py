"""Sliding-window attention in Triton: FlashAttention-2 style forward and backward, O(N * W).

Kernels see the window as a band: query row i sees key j iff `band_lo + i <= j <= band_hi + i`, with
`band_lo = q_offset - left` and `band_hi = q_offset + right`, and the key is valid, `k_start <= j < k_end`.
The launcher clamps both band edges to within a sequence length of the keys, so a window wider than
the sequence, or a huge q_offset, never overflows int32. Each block of queries walks only the key
blocks that meet its band, in three runs: masked edge, full blocks (no masking), masked edge.

Rows that see no key get zeros and a log-sum-exp of +inf, so the backward recomputes P = 0 for them.
The log-sum-exp is stored in base 2 (scores pre-scaled by scale * log2(e)) to use exp2.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
BUCKET_CAP = 8192


_UPCAST_DOTS = tl.constexpr(INTERPRET)  # the interpreter multiplies bf16 bit patterns as uint16 (Triton 3.8)


@triton.jit
def _mma(a, b, acc, PREC: tl.constexpr):
    """tl.dot with a float32 accumulator; float32 operands under the interpreter (same products as a GPU)."""
    if _UPCAST_DOTS:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PREC)


# ---- the band arithmetic shared by every kernel here and in triton_step.py ----------------------------
@triton.jit
def _block_runs(first, last, band_lo, band_hi, valid_lo, valid_hi, BLOCK: tl.constexpr):
    """For rows first..last of one block, the key runs [lo, fs) masked, [fs, fe) full, [fe, hi) masked.

    Works for the transposed question too (keys first..last, which rows?) with the band negated.
    """
    lo = tl.maximum(tl.maximum(first + band_lo, valid_lo), 0)
    hi = tl.maximum(tl.minimum(last + band_hi + 1, valid_hi), 0)
    full_lo = tl.maximum(tl.maximum(last + band_lo, valid_lo), 0)
    full_hi = tl.maximum(tl.minimum(first + band_hi + 1, valid_hi), 0)
    lo = (lo // BLOCK) * BLOCK
    fs = tl.minimum(tl.maximum(tl.cdiv(full_lo, BLOCK) * BLOCK, lo), hi)
    fe = tl.maximum((full_hi // BLOCK) * BLOCK, fs)
    return lo, fs, fe, hi


@triton.jit
def _visible(i, j, band_lo, band_hi, k_start, k_end):
    """Row i sees key j (pass i and j already broadcast against each other)."""
    return (j >= i + band_lo) & (j <= i + band_hi) & (j >= k_start) & (j < k_end)


# ---- forward ------------------------------------------------------------------------------------------
@triton.jit
def _online_softmax(acc, l_i, m_i, s, v, MASKED: tl.constexpr, PREC: tl.constexpr):
    """Fold one block of scores s (log2 units) and values v into the running max, sum and output."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    if MASKED:  # a row that has seen nothing yet keeps m = -inf; shift by 0 so exp2 gives 0, not NaN
        m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new_safe = m_new
    p = tl.math.exp2(s - m_new_safe[:, None])
    alpha = tl.math.exp2(m_i - m_new_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _mma(p.to(v.dtype), v, acc * alpha[:, None], PREC)
    return acc, l_i, m_new


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_vn, offs_m, offs_d, lo, hi,
               band_lo, band_hi, k_start, k_end, qk_scale,
               MASKED: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if MASKED:
            kt = tl.load(K + offs_n[None, :] * stride_kn + offs_d[:, None], mask=offs_n[None, :] < k_end, other=0.0)
            v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :], mask=offs_n[:, None] < k_end, other=0.0)
        else:
            kt = tl.load(K + offs_n[None, :] * stride_kn + offs_d[:, None])
            v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :])
        s = _mma(q, kt, None, PREC) * qk_scale
        if MASKED:
            s = tl.where(_visible(offs_m[:, None], offs_n[None, :], band_lo, band_hi, k_start, k_end), s, float("-inf"))
        acc, l_i, m_i = _online_softmax(acc, l_i, m_i, s, v, MASKED, PREC)
    return acc, l_i, m_i


def _configs(shapes):
    if INTERPRET:  # one small config: the interpreter runs each block in Python
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


# (BLOCK_M, BLOCK_N, warps, stages). Few on purpose: every config is a compile per dtype and head dim.
# 128 x 64/128 suit Hopper and A100 (as in Triton's fused-attention tutorial); small ones serve short chunks.
FWD_SHAPES = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (32, 32, 4, 2), (16, 32, 4, 2)]
# backward: dK/dV programs own BLOCK_N keys and walk BLOCK_M query rows; dQ programs the other way round
DKDV_SHAPES = [(32, 128, 4, 3), (32, 128, 8, 3), (64, 128, 8, 3), (64, 64, 4, 3), (16, 32, 4, 2)]
DQ_SHAPES = [(128, 32, 4, 3), (128, 32, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (16, 32, 4, 2)]


def _max_shared_memory() -> int:
    if not torch.cuda.is_available():
        return 1 << 30
    major, minor = torch.cuda.get_device_capability()
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    smem = getattr(props, "shared_memory_per_block_optin", 0)
    if smem:
        return smem
    return {(9, 0): 232448, (8, 0): 166912}.get((major, minor), 101376)


def _shared_bytes(kind: str, bm: int, bn: int, stages: int, head_dim: int, elem: int) -> int:
    """Tiles held for the whole program plus `stages` copies of the tiles streamed through the loop."""
    held, streamed = {"fwd": (bm, 2 * bn), "dq": (2 * bm, 2 * bn), "dkdv": (2 * bn, 2 * bm)}[kind]
    return (held + stages * streamed) * head_dim * elem


def _prune(configs, named_args, kind="fwd", **kwargs):
    """Drop blocks wider than the work (short chunks, narrow windows) and those that overflow shared memory."""
    if INTERPRET or len(configs) == 1:
        return configs[:1]
    args = {**named_args, **kwargs}
    rows = max(16, triton.next_power_of_2(args["N_ROWS_BUCKET"]))
    cols = max(16, triton.next_power_of_2(args["N_COLS_BUCKET"]))
    elem = args["Q"].element_size()
    head_dim, smem = args["HEAD_DIM"], _max_shared_memory()
    kept = []
    for c in configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        fits = bm <= rows and bn <= cols
        need = _shared_bytes(kind, bm, bn, c.num_stages, head_dim, elem)
        resident = bn if kind == "dkdv" else bm  # rows of the float32 accumulators each program keeps
        if not fits or need > smem or (head_dim >= 128 and resident >= 128 and c.num_warps < 8):
            continue  # (128 x 128 float32 accumulators on 4 warps spill registers)
        if elem == 4 and bm * bn > 32 * 32:  # exact float32 dots unroll into FMAs: big tiles take minutes to build
            continue
        if rows >= 1024 and cols >= 256 and bm * bn < 64 * 64:  # long sequences: small tiles only lose
            continue
        kept.append(c)
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def _bucket(n: int) -> int:
    """Autotune key in powers of two, so varying chunk lengths share one tuning result.

    (Recompiles are avoided separately: lengths and offsets are `do_not_specialize` arguments.)
    """
    return min(triton.next_power_of_2(max(int(n), 1)), BUCKET_CAP)


_KEY = ["N_ROWS_BUCKET", "N_COLS_BUCKET", "HEAD_DIM", "HAS_KLEN"]
# Shapes and offsets vary call to call: specializing on them (== 1, % 16) would only add compiles.
_NO_SPECIALIZE = ["H", "N_Q", "N_K", "band_lo", "band_hi", "k_start", "N_ROWS_BUCKET", "N_COLS_BUCKET"]


@triton.autotune(configs=_configs(FWD_SHAPES), key=_KEY, prune_configs_by={"early_config_prune": _prune})
@triton.heuristics({"EVEN_M": lambda a: a["N_Q"] % a["BLOCK_M"] == 0})
@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _fwd_kernel(Q, K, V, Out, LSE, KLEN,
                stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                H, N_Q, N_K, band_lo, band_hi, k_start, qk_scale,
                N_ROWS_BUCKET, N_COLS_BUCKET,
                HEAD_DIM: tl.constexpr, HAS_KLEN: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    Q += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    K += b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    V += b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    Out += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    LSE += bh.to(tl.int64) * N_Q
    k_end = N_K
    if HAS_KLEN:
        k_end = tl.minimum(tl.load(KLEN + b), N_K)

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
    lo, fs, fe, hi = _block_runs(first, first + BLOCK_M - 1, band_lo, band_hi, k_start, k_end, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_vn, offs_m, offs_d, lo, fs,
                               band_lo, band_hi, k_start, k_end, qk_scale, True, BLOCK_N, PREC)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_vn, offs_m, offs_d, fs, fe,
                               band_lo, band_hi, k_start, k_end, qk_scale, False, BLOCK_N, PREC)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_vn, offs_m, offs_d, fe, hi,
                               band_lo, band_hi, k_start, k_end, qk_scale, True, BLOCK_N, PREC)

    seen = l_i > 0.0
    l_safe = tl.where(seen, l_i, 1.0)
    out = acc / l_safe[:, None]
    lse = tl.where(seen, m_i + tl.math.log2(l_safe), float("inf"))
    o_ptrs = Out + offs_m[:, None] * stride_om + offs_d[None, :]
    if EVEN_M:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty))
        tl.store(LSE + offs_m, lse)
    else:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < N_Q)
        tl.store(LSE + offs_m, lse, mask=offs_m < N_Q)


# ---- backward -----------------------------------------------------------------------------------------
@triton.jit
def _bwd_preprocess(Out, DO, DELTA, stride_ob, stride_oh, stride_om, stride_db, stride_dh, stride_dm,
                    H, N_Q, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = sum_d dO_id * O_id, the row term of the softmax gradient."""
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row = offs_m[:, None] < N_Q
    Out += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    DO += b.to(tl.int64) * stride_db + h.to(tl.int64) * stride_dh
    o = tl.load(Out + offs_m[:, None] * stride_om + offs_d[None, :], mask=row, other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dm + offs_d[None, :], mask=row, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * N_Q + offs_m, delta, mask=offs_m < N_Q)


@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, stride_qm, stride_dom, offs_n, offs_d, lo, hi,
                    N_Q, band_lo, band_hi, k_start, k_end, qk_scale,
                    MASKED: tl.constexpr, BLOCK_M: tl.constexpr, PREC: tl.constexpr):
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        if MASKED:
            qt = tl.load(Q + offs_m[None, :] * stride_qm + offs_d[:, None], mask=offs_m[None, :] < N_Q, other=0.0)
            do = tl.load(DO + offs_m[:, None] * stride_dom + offs_d[None, :], mask=offs_m[:, None] < N_Q, other=0.0)
            lse = tl.load(LSE + offs_m, mask=offs_m < N_Q, other=float("inf"))
            delta = tl.load(DELTA + offs_m, mask=offs_m < N_Q, other=0.0)
        else:
            qt = tl.load(Q + offs_m[None, :] * stride_qm + offs_d[:, None])
            do = tl.load(DO + offs_m[:, None] * stride_dom + offs_d[None, :])
            lse = tl.load(LSE + offs_m)
            delta = tl.load(DELTA + offs_m)
        st = _mma(k, qt, None, PREC) * qk_scale  # (BLOCK_N, BLOCK_M): scores, transposed
        pt = tl.math.exp2(st - lse[None, :])
        if MASKED:
            pt = tl.where(_visible(offs_m[None, :], offs_n[:, None], band_lo, band_hi, k_start, k_end), pt, 0.0)
        dv = _mma(pt.to(do.dtype), do, dv, PREC)
        dpt = _mma(v, tl.trans(do), None, PREC)
        dst = pt * (dpt - delta[None, :])
        dk = _mma(dst.to(qt.dtype), tl.trans(qt), dk, PREC)
    return dk, dv


@triton.autotune(configs=_configs(DKDV_SHAPES), key=_KEY,
                 prune_configs_by={"early_config_prune": functools.partial(_prune, kind="dkdv")})
@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, KLEN,
                     stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                     stride_vb, stride_vh, stride_vn, stride_db, stride_dh, stride_dm,
                     stride_dkb, stride_dkh, stride_dkn, stride_dvb, stride_dvh, stride_dvn,
                     H, N_Q, N_K, band_lo, band_hi, k_start, qk_scale, scale,
                     N_ROWS_BUCKET, N_COLS_BUCKET,
                     HEAD_DIM: tl.constexpr, HAS_KLEN: tl.constexpr, PREC: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    Q += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    K += b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    V += b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    DO += b.to(tl.int64) * stride_db + h.to(tl.int64) * stride_dh
    DK += b.to(tl.int64) * stride_dkb + h.to(tl.int64) * stride_dkh
    DV += b.to(tl.int64) * stride_dvb + h.to(tl.int64) * stride_dvh
    LSE += bh.to(tl.int64) * N_Q
    DELTA += bh.to(tl.int64) * N_Q
    k_end = N_K
    if HAS_KLEN:
        k_end = tl.minimum(tl.load(KLEN + b), N_K)

    first = start_n * BLOCK_N
    last = first + BLOCK_N - 1
    offs_n = first + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    in_keys = offs_n[:, None] < N_K
    k = tl.load(K + offs_n[:, None] * stride_kn + offs_d[None, :], mask=in_keys, other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :], mask=in_keys, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Rows that see key j lie in [j - band_hi, j - band_lo]; a block holding an invalid key is never full.
    any_valid = (last >= k_start) & (first < k_end)
    all_valid = (first >= k_start) & (last < k_end)
    rows_hi = tl.where(any_valid, N_Q, 0)
    full_rows_hi = tl.where(all_valid, N_Q, 0)
    lo, fs, fe, hi = _block_runs(first, last, -band_hi, -band_lo, 0, rows_hi, BLOCK_M)
    fe = tl.minimum(fe, tl.maximum((full_rows_hi // BLOCK_M) * BLOCK_M, fs))
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, stride_qm, stride_dm, offs_n, offs_d, lo, fs,
                             N_Q, band_lo, band_hi, k_start, k_end, qk_scale, True, BLOCK_M, PREC)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, stride_qm, stride_dm, offs_n, offs_d, fs, fe,
                             N_Q, band_lo, band_hi, k_start, k_end, qk_scale, False, BLOCK_M, PREC)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, stride_qm, stride_dm, offs_n, offs_d, fe, hi,
                             N_Q, band_lo, band_hi, k_start, k_end, qk_scale, True, BLOCK_M, PREC)

    tl.store(DK + offs_n[:, None] * stride_dkn + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=in_keys)
    tl.store(DV + offs_n[:, None] * stride_dvn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=in_keys)


@triton.jit
def _bwd_dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_vn, offs_m, offs_d, lo, hi,
                  band_lo, band_hi, k_start, k_end, qk_scale,
                  MASKED: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if MASKED:
            kt = tl.load(K + offs_n[None, :] * stride_kn + offs_d[:, None], mask=offs_n[None, :] < k_end, other=0.0)
            vt = tl.load(V + offs_n[None, :] * stride_vn + offs_d[:, None], mask=offs_n[None, :] < k_end, other=0.0)
        else:
            kt = tl.load(K + offs_n[None, :] * stride_kn + offs_d[:, None])
            vt = tl.load(V + offs_n[None, :] * stride_vn + offs_d[:, None])
        s = _mma(q, kt, None, PREC) * qk_scale
        p = tl.math.exp2(s - lse[:, None])
        if MASKED:
            p = tl.where(_visible(offs_m[:, None], offs_n[None, :], band_lo, band_hi, k_start, k_end), p, 0.0)
        dp = _mma(do, vt, None, PREC)
        ds = p * (dp - delta[:, None])
        dq = _mma(ds.to(kt.dtype), tl.trans(kt), dq, PREC)
    return dq


@triton.autotune(configs=_configs(DQ_SHAPES), key=_KEY,
                 prune_configs_by={"early_config_prune": functools.partial(_prune, kind="dq")})
@triton.heuristics({"EVEN_M": lambda a: a["N_Q"] % a["BLOCK_M"] == 0})
@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, KLEN,
                   stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                   stride_vb, stride_vh, stride_vn, stride_db, stride_dh, stride_dm,
                   stride_dqb, stride_dqh, stride_dqm,
                   H, N_Q, N_K, band_lo, band_hi, k_start, qk_scale, scale,
                   N_ROWS_BUCKET, N_COLS_BUCKET,
                   HEAD_DIM: tl.constexpr, HAS_KLEN: tl.constexpr, PREC: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    Q += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    K += b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    V += b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    DO += b.to(tl.int64) * stride_db + h.to(tl.int64) * stride_dh
    DQ += b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh
    LSE += bh.to(tl.int64) * N_Q
    DELTA += bh.to(tl.int64) * N_Q
    k_end = N_K
    if HAS_KLEN:
        k_end = tl.minimum(tl.load(KLEN + b), N_K)

    first = start_m * BLOCK_M
    offs_m = first + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    if EVEN_M:
        q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :])
        do = tl.load(DO + offs_m[:, None] * stride_dm + offs_d[None, :])
        lse = tl.load(LSE + offs_m)
        delta = tl.load(DELTA + offs_m)
    else:
        row = offs_m < N_Q
        q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :], mask=row[:, None], other=0.0)
        do = tl.load(DO + offs_m[:, None] * stride_dm + offs_d[None, :], mask=row[:, None], other=0.0)
        lse = tl.load(LSE + offs_m, mask=row, other=float("inf"))
        delta = tl.load(DELTA + offs_m, mask=row, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    lo, fs, fe, hi = _block_runs(first, first + BLOCK_M - 1, band_lo, band_hi, k_start, k_end, BLOCK_N)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_vn, offs_m, offs_d, lo, fs,
                       band_lo, band_hi, k_start, k_end, qk_scale, True, BLOCK_N, PREC)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_vn, offs_m, offs_d, fs, fe,
                       band_lo, band_hi, k_start, k_end, qk_scale, False, BLOCK_N, PREC)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_vn, offs_m, offs_d, fe, hi,
                       band_lo, band_hi, k_start, k_end, qk_scale, True, BLOCK_N, PREC)
    dq_ptrs = DQ + offs_m[:, None] * stride_dqm + offs_d[None, :]
    if EVEN_M:
        tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty))
    else:
        tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=offs_m[:, None] < N_Q)


# ---- launchers ----------------------------------------------------------------------------------------
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def is_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Can these kernels take the inputs? (for dispatch: CUDA, or CPU under TRITON_INTERPRET=1)."""
    d = q.shape[-1]
    on_device = q.is_cuda or (INTERPRET and q.device.type == "cpu")
    same = q.dtype == k.dtype == v.dtype and q.device == k.device == v.device
    return on_device and same and q.dtype in DTYPES and 16 <= d <= 256 and d & (d - 1) == 0


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def band_edges(n_q: int, n_k: int, window, q_offset: int) -> tuple[int, int]:
    """(band_lo, band_hi) = (q_offset - left, q_offset + right), clamped to an equivalent small range.

    Row i sees keys band_lo + i .. band_hi + i; an edge beyond the keys on either side means the same
    as one just past them, so Python ints of any size become int32-safe.
    """
    left, right = int(window[0]), int(window[1])
    lo = min(max(q_offset - left, -n_q), n_k)
    hi = min(max(q_offset + right, -n_q - 1), n_k)
    return lo, hi


def _check(q, k, v, window):
    assert q.dim() == 4 and k.dim() == 4 and v.dim() == 4, "q, k, v must be (B, H, N, D)"
    assert k.shape == v.shape, f"k {tuple(k.shape)} and v {tuple(v.shape)} differ"
    assert q.shape[:2] == k.shape[:2] and q.shape[3] == k.shape[3], f"q {tuple(q.shape)} vs k {tuple(k.shape)}"
    assert q.dtype == k.dtype == v.dtype and q.dtype in DTYPES, f"dtypes {q.dtype}, {k.dtype}, {v.dtype}"
    d = q.shape[3]
    assert 16 <= d <= 256 and d & (d - 1) == 0, f"head dim must be a power of two in [16, 256]; got {d}"
    assert len(window) == 2 and min(window) >= 0, f"window must be (left, right) >= 0; got {window!r}"
    # grid axis 1 is B * H (axis 0, query blocks, keeps neighbouring blocks of one head together for L2)
    assert q.shape[0] * q.shape[1] < 65536, f"B * H must be < 65536 (CUDA grid limit); got {q.shape[0] * q.shape[1]}"


def _k_lengths_arg(k_lengths, batch: int, n_k: int, device):
    if k_lengths is None:
        return None
    assert k_lengths.shape == (batch,), f"k_lengths must be (B,) = ({batch},); got {tuple(k_lengths.shape)}"
    return k_lengths.to(device=device, dtype=torch.int32).clamp(0, n_k).contiguous()


def _launch_args(q, k, band, k_start, klen):
    n_q, n_k = q.shape[2], k.shape[2]
    return dict(
        H=q.shape[1], N_Q=n_q, N_K=n_k, band_lo=band[0], band_hi=band[1], k_start=min(max(k_start, 0), n_k),
        N_ROWS_BUCKET=_bucket(n_q), N_COLS_BUCKET=_bucket(min(n_k, band[1] - band[0] + 1)),
        HEAD_DIM=q.shape[3], HAS_KLEN=klen is not None, PREC="ieee" if q.dtype == torch.float32 else "tf32",
    )


def attention_forward(q, k, v, window, q_offset=0, k_start=0, k_lengths=None, scale=None):
    """-> (o (B, H, Nq, D) in q's dtype, lse (B, H, Nq) float32, base 2; +inf where a row sees nothing)."""
    _check(q, k, v, window)
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    batch, heads, n_q, dim = q.shape
    scale = dim**-0.5 if scale is None else float(scale)
    o = torch.empty_like(q)
    lse = torch.empty(batch, heads, n_q, device=q.device, dtype=torch.float32)
    if o.numel() == 0 or k.shape[2] == 0:  # nothing to see: zeros, and no kernel on empty pointers
        return o.zero_(), lse.fill_(float("inf"))
    band = band_edges(n_q, k.shape[2], window, q_offset)
    klen = _k_lengths_arg(k_lengths, batch, k.shape[2], q.device)

    def grid(meta):
        return (triton.cdiv(n_q, meta["BLOCK_M"]), batch * heads)

    _fwd_kernel[grid](
        q, k, v, o, lse, klen if klen is not None else lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        qk_scale=scale * LOG2E, **_launch_args(q, k, band, k_start, klen),
    )
    return o, lse


def attention_backward(do, q, k, v, o, lse, window, q_offset=0, k_start=0, k_lengths=None, scale=None, dlse=None):
    """-> (dq, dk, dv), recomputing P from the saved base-2 log-sum-exp. `dlse` (B, H, Nq), the gradient of
    the natural log-sum-exp when a caller used it (to merge other keys in), enters through the row term:
    d lse / d score_j = p_j, so ds_j = p_j * (dp_j - delta + dlse)."""
    do = _last_dim_contiguous(do)
    batch, heads, n_q, dim = q.shape
    n_k = k.shape[2]
    scale = dim**-0.5 if scale is None else float(scale)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if n_q == 0 or n_k == 0 or batch * heads == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    band = band_edges(n_q, n_k, window, q_offset)
    klen = _k_lengths_arg(k_lengths, batch, n_k, q.device)
    delta = torch.empty_like(lse)
    _bwd_preprocess[(triton.cdiv(n_q, 64), batch * heads)](
        o, do, delta, *o.stride()[:3], *do.stride()[:3], heads, n_q, HEAD_DIM=dim, BLOCK_M=64
    )
    if dlse is not None:
        delta = delta - dlse.float()
    common = dict(qk_scale=scale * LOG2E, scale=scale, **_launch_args(q, k, band, k_start, klen))
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    klen_arg = klen if klen is not None else lse
    _bwd_dkdv_kernel[lambda meta: (triton.cdiv(n_k, meta["BLOCK_N"]), batch * heads)](
        q, k, v, do, dk, dv, lse, delta, klen_arg, *strides, *dk.stride()[:3], *dv.stride()[:3], **common
    )
    _bwd_dq_kernel[lambda meta: (triton.cdiv(n_q, meta["BLOCK_M"]), batch * heads)](
        q, k, v, do, dq, lse, delta, klen_arg, *strides, *dq.stride()[:3], **common
    )
    return dq, dk, dv


class TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window, q_offset, k_start, k_lengths, scale):
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        o, lse = attention_forward(q, k, v, window, q_offset, k_start, k_lengths, scale)
        ctx.save_for_backward(q, k, v, o, lse, k_lengths if k_lengths is not None else torch.empty(0))
        ctx.placement = (tuple(window), q_offset, k_start, k_lengths is not None, scale)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, k_lengths = ctx.saved_tensors
        window, q_offset, k_start, has_lengths, scale = ctx.placement
        dq, dk, dv = attention_backward(
            do, q, k, v, o, lse, window, q_offset, k_start, k_lengths if has_lengths else None, scale
        )
        return dq, dk, dv, None, None, None, None, None


_triton_attention = TritonAttention.apply


class TritonAttentionLSE(torch.autograd.Function):
    """Like TritonAttention, and also returns the natural log-sum-exp of each row's scores (-inf where a row
    sees nothing), differentiably: the variants merge sinks and global tokens into the window through it."""

    @staticmethod
    def forward(ctx, q, k, v, window, k_lengths, scale):
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        o, lse = attention_forward(q, k, v, window, 0, 0, k_lengths, scale)
        ctx.save_for_backward(q, k, v, o, lse, k_lengths if k_lengths is not None else torch.empty(0))
        ctx.placement = (tuple(window), k_lengths is not None, scale)
        natural = torch.where(torch.isinf(lse), torch.full_like(lse, float("-inf")), lse / LOG2E)
        return o, natural

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse, k_lengths = ctx.saved_tensors
        window, has_lengths, scale = ctx.placement
        dlse = None if dlse is None else torch.where(torch.isinf(lse), torch.zeros_like(dlse), dlse)
        dq, dk, dv = attention_backward(do.contiguous(), q, k, v, o, lse, window, 0, 0,
                                        k_lengths if has_lengths else None, scale, dlse=dlse)
        return dq, dk, dv, None, None, None


def triton_attention_lse(q, k, v, window, *, k_lengths=None, scale=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention (q_offset 0, k_start 0) -> (o (B, H, N, D), natural log-sum-exp (B, H, N) float32)."""
    return TritonAttentionLSE.apply(q, k, v, tuple(window), k_lengths, scale)


def triton_attention(
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
    """Same contract as `attention_reference`: q (B, H, Nq, D), k and v (B, H, Nk, D) -> (B, H, Nq, D).

    Differentiable in q, k, v. k_lengths (B,) ints, optional. Needs CUDA (or TRITON_INTERPRET=1 on CPU).
    """
    return _triton_attention(q, k, v, tuple(window), int(q_offset), int(k_start), k_lengths, scale)


__all__ = ["triton_attention", "triton_attention_lse", "attention_forward", "attention_backward", "band_edges",
           "is_supported"]
