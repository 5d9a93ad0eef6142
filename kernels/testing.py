"""What every kernel test holds to: the dense definitions (kernels/reference.py) and FlashAttention's
accuracy rule, in one place for tests/kernels and benchmarks/gpu_check.py. Plain torch only (no pytest),
so that the GPU check runs where only the package is staged.

The rule (FlashAttention's tests, `attention_ref`): against a float64 reference, a kernel's error may be
at most twice the error of a plain PyTorch run of the same computation in the kernel's own precision.
Errors are relative, `max |x - precise| / max(max |precise|, 1)`, never a fixed atol, so the rule means
the same for values near 1 and values near 30. FlashAttention's rounding allowance is added to the bound:
eps of the kernel's dtype (two roundings, of half an ulp each) at the reference's size. It covers a plain run that
happens to be exact, such as a gradient that is exactly 0 (one visible key: softmax 1, dq = dk = 0) while
a fused kernel's reordered sums leave an ulp of noise. Such a gradient has no size of its own: its noise is
that of the terms that cancel, so a forward-and-backward check measures every part (out, dq, dk, dv)
against the largest reference value of the pass, and "at least 1" keeps an all-zero pass finite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from swa_stream.kernels.reference import attention_reference, variant_reference, visibility_mask

__all__ = [
    "FlashCheck",
    "assert_flash_rule",
    "attention_reference",
    "flash_checks",
    "flash_rule",
    "forward_backward",
    "plain_attention",
    "relative_error",
    "ring_in_position_order",
    "variant_reference",
    "visibility_mask",
]


def plain_attention(q, k, v, window, *, q_offset=0, k_start=0, k_lengths=None, scale=None) -> torch.Tensor:
    """What a user would write in PyTorch at the inputs' own precision (FlashAttention's `upcast=False`):
    scores and weighted sum in q's dtype, the softmax taken in float32 and rounded back, as torch does for
    low-precision inputs on every device."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = visibility_mask(q.shape[2], k.shape[2], window, q_offset=q_offset, k_start=k_start,
                           k_lengths=k_lengths, device=q.device)
    scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(q.dtype) @ v


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|; the absolute error where `expected` is all zeros (or empty)."""
    if got.numel() == 0:
        return 0.0
    err = (got.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    return err / scale if scale > 0 else err


def _size(t: torch.Tensor) -> float:
    """The size errors are relative to: max |t|, at least 1 (see the module docstring)."""
    return max(t.double().abs().max().item(), 1.0) if t.numel() else 1.0


@dataclass
class FlashCheck:
    """One comparison under the rule; errors are relative to max(max |precise|, 1)."""

    what: str
    dtype: torch.dtype
    err: float
    plain_err: float
    bound: float
    finite: bool

    @property
    def ok(self) -> bool:
        return self.finite and self.err <= self.bound

    def __str__(self) -> str:
        return (f"{self.what} ({str(self.dtype).removeprefix('torch.')}): relative error {self.err:.3g}, "
                f"plain {self.plain_err:.3g}, bound {self.bound:.3g}{'' if self.finite else ', NOT FINITE'}")


def flash_rule(got: torch.Tensor, precise: torch.Tensor, plain: torch.Tensor, what: str = "out",
               size: float | None = None) -> FlashCheck:
    """Judge `got` (the kernel, in its low precision) against `precise` (float64) by `plain` (a plain
    PyTorch run in got's precision): relative error <= 2 x plain's relative error + eps of got's dtype.
    Errors are relative to `size`, by default max(max |precise|, 1)."""
    if got.shape != precise.shape or got.shape != plain.shape:
        raise AssertionError(f"{what}: shapes differ: {tuple(got.shape)}, {tuple(precise.shape)}, {tuple(plain.shape)}")
    size = _size(precise) if size is None else size
    err, plain_err = ((x.double() - precise.double()).abs().max().item() / size if x.numel() else 0.0
                      for x in (got, plain))
    bound = 2 * plain_err + torch.finfo(got.dtype).eps
    return FlashCheck(what, got.dtype, err, plain_err, bound, bool(torch.isfinite(got).all()))


def assert_flash_rule(checks: FlashCheck | list[FlashCheck]) -> None:
    checks = [checks] if isinstance(checks, FlashCheck) else checks
    failed = [str(c) for c in checks if not c.ok]
    if failed:
        raise AssertionError("FlashAttention rule broken: " + "; ".join(failed))


def forward_backward(attend: Callable, inputs, grad_out: torch.Tensor | None = None) -> list[torch.Tensor]:
    """[out, *d(out . grad_out)/d(input)] for fresh leaf copies of `inputs`; a gradient that does not
    reach an input is zeros. Without `grad_out`, only [out] (under no_grad)."""
    if grad_out is None:
        with torch.no_grad():
            return [attend(*inputs).detach()]
    leaves = [x.detach().requires_grad_() for x in inputs]
    out = attend(*leaves)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype), allow_unused=True)
    return [out.detach(), *(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True))]


def flash_checks(attend: Callable, q, k, v, window, *, grad_out=None, **placement):
    """Run `attend(q, k, v, window, **placement)` (a kernel, in q's dtype) beside the float64 reference and
    a plain run in q's dtype; judge out (and dq, dk, dv when `grad_out` is given) by the rule. Returns the
    kernel's [out, (dq, dk, dv)] and the checks."""
    def run(fn, cast):
        return forward_backward(lambda *x: fn(*x, window, **placement), [cast(t) for t in (q, k, v)],
                                None if grad_out is None else cast(grad_out))

    got = run(attend, lambda t: t)
    precise = run(attention_reference, torch.Tensor.double)
    plain = run(plain_attention, lambda t: t)
    size = max(_size(t) for t in precise)  # the pass's size (module docstring)
    names = ("out", "dq", "dk", "dv")
    return got, [flash_rule(a, b, c, name, size) for name, a, b, c in zip(names, got, precise, plain, strict=False)]


def ring_in_position_order(k_ring, v_ring, k_new, v_new, window, *, end: int, stream_start: int):
    """The definition of a streaming step's keys: the ring (position p in slot p % capacity, with `end`
    positions received) read oldest first, then the new keys. Returns keys, values and the placement under
    which dense attention of the step's queries equals the ring kernels' (queries start `left` keys in;
    slots before the stream's start hold junk and are excluded)."""
    capacity = k_ring.shape[2]
    order = torch.tensor([(end - capacity + j) % capacity for j in range(capacity)], dtype=torch.long,
                         device=k_ring.device)
    keys = torch.cat([k_ring[:, :, order], k_new], dim=2)
    values = torch.cat([v_ring[:, :, order], v_new], dim=2)
    return keys, values, dict(q_offset=window[0], k_start=max(0, stream_start - (end - capacity)))
