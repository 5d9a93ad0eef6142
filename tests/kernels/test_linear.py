"""The CPU's fused linear (kernels/linear.py) against F.linear and F.gelu, and where it steps aside."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd import forward_ad

from swa_stream.attention import apply_ffn, apply_linear
from swa_stream.kernels import fused_linear
from swa_stream.kernels import linear as fused

pytestmark = pytest.mark.skipif(not fused._working, reason="this torch has no oneDNN linear")


def weights(n_in, n_out, column_major, seed=0):
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(n_out, n_in, generator=g) * n_in**-0.5, torch.randn(n_out, generator=g)
    return (w.t().contiguous().t() if column_major else w), b


@settings(deadline=None, max_examples=20)
@given(rows=st.integers(2048, 9000), lead=st.sampled_from([(), (1,), (2,)]),
       shape=st.sampled_from([(64, 192), (64, 64), (64, 128), (128, 64), (96, 288), (16, 48)]),
       column_major=st.booleans(), gelu=st.booleans(), seed=st.integers(0, 1000))
def test_fused_linear_is_f_linear_then_gelu(rows, lead, shape, column_major, gelu, seed):
    n_in, n_out = shape
    w, b = weights(n_in, n_out, column_major, seed)
    x = torch.randn(*lead, rows, n_in, generator=torch.Generator().manual_seed(seed + 1))
    want = F.linear(x, w, b)
    want = F.gelu(want) if gelu else want
    with torch.no_grad():
        got = fused_linear(x, w, b, gelu=gelu)
    if rows * n_out * math.prod(lead) <= (fused.FUSED_GELU_OUTPUTS if gelu else fused.FUSED_LINEAR_OUTPUTS):
        assert got is None
        return
    assert got is not None and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_it_steps_aside_where_it_would_lose_gradients_or_not_pay():
    w, b = weights(64, 192, True)
    x = torch.randn(8192, 64)
    with torch.no_grad():
        assert fused_linear(x, w, b) is not None
        assert fused_linear(x[:64], w, b) is None  # a short run
        assert fused_linear(x.double(), w.double(), b.double()) is None
        assert fused_linear(x, w, None) is None
        assert fused_linear(torch.randn(64, 8192).t(), w, b) is None  # not contiguous
    assert fused_linear(x, w.requires_grad_(), b) is None  # autograd
    with torch.no_grad(), forward_ad.dual_level():
        assert fused_linear(forward_ad.make_dual(x, torch.ones_like(x)), w, b) is None


def test_modules_with_hooks_are_called_and_others_are_fused(monkeypatch):
    """apply_linear / apply_ffn use the module's tensors only where calling it would do nothing more."""
    calls = []
    monkeypatch.setattr("swa_stream.attention.fused_linear", lambda *a, **k: calls.append(k) or fused_linear(*a, **k))
    torch.manual_seed(0)
    ffn = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
    x = torch.randn(1, 8192, 64)
    with torch.no_grad():
        want = ffn(x)
        torch.testing.assert_close(apply_ffn(ffn, x), want, rtol=1e-5, atol=1e-5)
        assert len(calls) == 2 and calls[0] == {"gelu": True}
        seen = []
        handle = ffn[2].register_forward_hook(lambda m, i, o: seen.append(o.shape))
        calls.clear()
        torch.testing.assert_close(apply_ffn(ffn, x), want, rtol=1e-5, atol=1e-5)
        assert seen == [want.shape] and not calls  # a hook on a part: the ffn is called as it is
        handle.remove()
        tanh = nn.Sequential(nn.Linear(64, 128), nn.GELU(approximate="tanh"), nn.Linear(128, 64))
        calls.clear()
        torch.testing.assert_close(apply_ffn(tanh, x), tanh(x))
        assert not calls
        calls.clear()
        torch.testing.assert_close(apply_linear(ffn[0], x), ffn[0](x), rtol=1e-5, atol=1e-5)
        assert len(calls) == 1
