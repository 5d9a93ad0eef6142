"""A linear layer without autograd on the CPU, its bias (and an exact GELU) fused into the product.

`F.linear` on the CPU copies the bias into every row of a fresh output and then multiplies into it
(addmm): at a streaming step's 16,384 positions that copy is as dear as the product (64 -> 192 features:
8.3 ms against 4.2 ms, one thread). oneDNN's linear (`torch.ops.mkldnn._linear_pointwise`, the op that
torch.compile's CPU backend emits) adds the bias, and optionally applies GELU, as it writes each output
tile. Its outputs were the same bits as `F.linear` (and as F.gelu of it) at every shape this model uses
(`tests/kernels/test_linear.py` checks that they agree to rounding, wherever it runs).

It pays only on long runs: oneDNN's set-up per call costs more than the copy below a few hundred thousand
outputs (measured on this project's 2-core Xeon, one thread: benchmarks/fused_linear.py), so shorter
calls return None and the caller runs its usual path. The op is private to torch (pinned in
pyproject.toml): where it is missing, or fails once, every call returns None from then on.
"""

from __future__ import annotations

import torch
from torch.autograd import forward_ad

_POINTWISE = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
_working = _POINTWISE is not None and torch.backends.mkldnn.is_available()

# Output elements above which the fused call is faster than F.linear (then GELU), one thread
# (docs/fused_linear.json): 0.84 of the time at 2,048 x 192, 0.91 at 4,096 x 64, 1.17 at 1,024 x 64;
# with GELU fused, 0.75 already at 1,024 x 128.
FUSED_LINEAR_OUTPUTS = 1 << 18
FUSED_GELU_OUTPUTS = 1 << 16


def fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False):
    """F.linear(x, weight, bias), then the exact (erf) GELU if `gelu`, in one oneDNN call: or None where it
    does not apply (no bias, not float32 on the CPU, autograd of either mode, a non-contiguous x, a short
    run, or no oneDNN), and the caller computes it as before."""
    global _working
    if not _working or bias is None or x.dim() < 2 or not x.is_contiguous():
        return None
    if x.numel() // x.shape[-1] * weight.shape[0] <= (FUSED_GELU_OUTPUTS if gelu else FUSED_LINEAR_OUTPUTS):
        return None
    tensors = (x, weight, bias)
    if not all(t.dtype is torch.float32 and t.is_cpu for t in tensors):
        return None
    if (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) or getattr(
            forward_ad, "_current_level", -1) >= 0:
        return None
    try:
        return _POINTWISE(x, weight, bias, "gelu", [], "none") if gelu else _POINTWISE(x, weight, bias, "none", [], "")
    except RuntimeError:  # an op that exists but cannot run here: the usual path from now on
        _working = False
        return None
