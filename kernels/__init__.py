"""Sliding-window attention behind one entry point, plus the streaming step over a KV ring buffer.

Semantics (FlashAttention's `window_size` convention): query row i sits at key index
`q_offset + i` and attends key j iff `q_offset + i - left <= j <= q_offset + i + right`, and the key
is valid: `k_start <= j < k_lengths[b]` (default: all Nk keys). A row that sees no valid key returns
zeros. Self-attention over one sequence is the default `q_offset=0`.

Backends: "triton" (kernels/triton_*.py; CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 was set
before the first import, which is how the tests run them), "torch" (kernels/cpu.py, the fast CPU path,
forward and backward), "reference" (the dense masked definition, for tests), and "auto": Triton on CUDA
tensors it supports, else the PyTorch path.
"""

from __future__ import annotations

import torch

from swa_stream.kernels import cpu_step
from swa_stream.kernels.cpu import blocked_attention
from swa_stream.kernels.linear import fused_linear
from swa_stream.kernels.reference import attention_reference
from swa_stream.kernels.ring import _one, ring_attention_small, ring_attention_torch, ring_read, ring_write
from swa_stream.kernels.variants import NEG, dilated_attention, extended_attention, merge_extras, prefix_summary

BACKENDS = ("auto", "triton", "torch", "reference")


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


def use_triton(backend: str, q, k, v) -> bool:
    """Decide between Triton and PyTorch; importing Triton is deferred until a CUDA tensor (or an
    explicit request) needs it, so CPU users never pay for it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend in ("torch", "reference") or (backend == "auto" and not q.is_cuda):
        return False
    from swa_stream.kernels import triton_swa

    if triton_swa.is_supported(q, k, v):
        return True
    if backend == "triton":
        raise ValueError(
            "backend 'triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before the first "
            f"import), equal dtypes in {triton_swa.DTYPES} and a power-of-two head size in [16, 256]; got "
            f"{q.device.type} {q.dtype} with head size {q.shape[-1]}"
        )
    return False


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
    """Attention of q (B, H, Nq, D) over k, v (B, H, Nk, D) inside a (left, right) window -> (B, H, Nq, D)."""
    window = _check(q, k, v, window)
    placement = dict(q_offset=q_offset, k_start=k_start, k_lengths=k_lengths, scale=scale)
    if backend == "reference":
        return attention_reference(q, k, v, window, **placement)
    if use_triton(backend, q, k, v):
        from swa_stream.kernels.triton_swa import triton_attention

        return triton_attention(q, k, v, window, **placement)
    return blocked_attention(q, k, v, window, **placement)


def triton_attention_lse(q, k, v, window, *, k_lengths=None):
    """The Triton window kernel's (output, natural log-sum-exp), which the variants compose with sinks and
    global tokens; imported on first use, so that CPU users never load Triton."""
    from swa_stream.kernels.triton_swa import triton_attention_lse as kernel

    return kernel(q, k, v, window, k_lengths=k_lengths)


def ring_window_attention(
    q: torch.Tensor,
    k_ring: torch.Tensor,
    v_ring: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    window: tuple[int, int],
    *,
    end: int | list[int],
    stream_start: int | list[int],
    new_counts: list[int] | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """One streaming step: queries q (B, H, Tq, D) at positions end - right .. attend the ring buffer
    k_ring, v_ring (B, H, left + right, D; position p in slot p % C, positions end - C .. end - 1) plus
    the new keys k_new, v_new (B, H, t, D; positions end .. end + t - 1). Keys before `stream_start`
    are invisible. `end` and `stream_start` are one integer, or one per row (a ragged batch), and then
    `new_counts[b]` of row b's t new keys are valid (the rest, and the queries past them, are padding).
    Triton reads the ring in place (rows at one position only); the PyTorch path unrolls it."""
    window = _check(q, k_new, v_new, window)
    one_position = isinstance(end, int) and isinstance(stream_start, int) and new_counts is None
    if one_position and (backend == "torch" or backend == "auto" and not q.is_cuda):
        # The hot path of a CPU stream: a few queries, a ring of tens of keys, one position for all rows.
        return ring_attention_small(q, k_ring, v_ring, k_new, v_new, window, end=end, stream_start=stream_start,
                                    scale=scale)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k_ring, v_ring, k_new, v_new))
    one_end, one_start = _one(end), _one(stream_start)
    full = new_counts is None or all(c == k_new.shape[2] for c in new_counts)
    aligned = one_end is not None and one_start is not None and full
    if aligned and not needs_grad and use_triton(backend, q, k_new, v_new):  # the ring kernel is forward-only
        from swa_stream.kernels.triton_step import triton_ring_attention

        return triton_ring_attention(q, k_ring, v_ring, k_new, v_new, window, end=one_end, stream_start=one_start,
                                     scale=scale)
    if aligned:
        end, stream_start, new_counts = one_end, one_start, None
    return ring_attention_torch(q, k_ring, v_ring, k_new, v_new, window, end=end, stream_start=stream_start,
                                new_counts=new_counts, scale=scale, dense=backend == "reference")


def fused_ring_step(qkv, cos, signed_sin, k_ring, v_ring, pending_q, window, *, end: int, stream_start: int,
                    backend: str = "auto"):
    """One layer's aligned streaming step around its attention, fused on the CPU (kernels/cpu_step.c):
    rotate the new queries and keys, write the new keys and values into the ring, and attend as
    `ring_window_attention` does. qkv (B, T, 3 * H * D) is the input projection of the T new positions
    (positions end .., every row at one position), cos and signed_sin (T, D) the rotary tables of
    `RotaryPositions.full_tables`, pending_q (B, H, R, D) the held-back rotated queries (R = window[1]).
    Returns (outputs (B, T, H * D) of the queries at positions end - R .., the ring's new keys and values,
    the new held-back queries), or None where the fused step does not apply (not float32 on the CPU, an
    odd head size, a long step, backend "reference", no C compiler): the caller then runs the PyTorch
    path, which gives the same numbers to rounding."""
    if backend not in ("auto", "torch") or window[1] != pending_q.shape[2] or sum(window) != k_ring.shape[2]:
        return None
    return cpu_step.fused_ring_step(qkv, cos, signed_sin, k_ring, v_ring, pending_q, end, stream_start)


def rotate_qk(qkv, cos, signed_sin, heads: int):
    """The rotary rotation of a projection's queries and keys in one pass on the CPU (kernels/cpu_step.c):
    qkv (B, T, 3 * heads * D), cos and signed_sin (T, D) as `RotaryPositions.full_tables` gives them ->
    (q, k), each (B, heads, T, D) contiguous, bitwise `RotaryPositions.rotate_full`'s; or None where it does
    not apply (another device or dtype, autograd, no C compiler): the caller then rotates with torch."""
    return cpu_step.rotate_qk(qkv, cos, signed_sin, heads)


# What the core uses: the two entry points (with the streaming one's fused CPU form and the CPU rotation),
# the CPU's fused linear (kernels/linear.py), the ring's read/write, and the variants' pieces (each one call
# into kernels/variants.py, so the core reaches no kernels.* module itself).
__all__ = ["BACKENDS", "use_triton", "sliding_window_attention", "ring_window_attention", "fused_ring_step",
           "rotate_qk", "fused_linear", "ring_read", "ring_write", "attention_reference", "blocked_attention", "NEG",
           "dilated_attention", "extended_attention", "merge_extras", "prefix_summary", "triton_attention_lse"]
