"""The variants' attention (kernels/variants.py) equals its dense definition (variant_reference), forward
and backward, for any block size; a dilated window run as plain attention per residue class equals it on
every backend, Triton's interpreter included."""

import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from swa_stream.kernels import sliding_window_attention  # noqa: E402
from swa_stream.kernels.testing import variant_reference  # noqa: E402
from swa_stream.kernels.variants import dilated_attention, extended_attention, prefix_summary  # noqa: E402


@st.composite
def attention_case(draw):
    heads, length, dim = draw(st.integers(1, 2)), draw(st.integers(1, 40)), draw(st.sampled_from([4, 8]))
    window, dilation = (draw(st.integers(0, 6)), draw(st.integers(0, 3))), draw(st.integers(1, 3))
    n_sinks, n_extra = draw(st.integers(0, 3)), draw(st.integers(0, 2))
    lengths = torch.tensor([length, draw(st.integers(0, length))])
    return heads, length, dim, window, dilation, n_sinks, n_extra, draw(st.booleans()), lengths, draw(
        st.sampled_from([1, 3, 32]))


def tensors(heads, length, dim, window, dilation, n_extra, with_bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, heads, length, dim, generator=g, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(heads, window[0] * dilation + 1, generator=g, dtype=torch.float64) if with_bias else None
    logits = torch.randn(2, heads, length, n_extra, generator=g, dtype=torch.float64) if n_extra else None
    values = torch.randn(2, heads, length, n_extra, dim, generator=g, dtype=torch.float64) if n_extra else None
    return q, k, v, bias, logits, values


@settings(deadline=None, max_examples=60)
@given(case=attention_case())
def test_blocked_variant_attention_equals_the_dense_definition(case):
    heads, length, dim, window, dilation, n_sinks, n_extra, with_bias, lengths, block = case
    q, k, v, bias, logits, values = tensors(heads, length, dim, window, dilation, n_extra, with_bias)
    n = min(n_sinks, length)
    sinks = (k[:, :, :n], v[:, :, :n], torch.arange(n)) if n_sinks else None
    got = extended_attention(q, k, v, window, dilation=dilation, span_bias=bias, sinks=sinks, extra_logits=logits,
                             extra_values=values, k_lengths=lengths, block=block)
    want = variant_reference(q, k, v, window, dilation=dilation, n_sinks=n_sinks, span_bias=bias,
                             extra_logits=logits, extra_values=values, k_lengths=lengths)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_gradients_equal_the_dense_definitions():
    q, k, v, bias, logits, values = tensors(2, 23, 8, (4, 2), 2, 2, True, seed=3)
    inputs = [t.requires_grad_() for t in (q, k, v, bias, logits, values)]
    lengths = torch.tensor([23, 17])
    sinks = (k[:, :, :3], v[:, :, :3], torch.arange(3))
    got = extended_attention(q, k, v, (4, 2), dilation=2, span_bias=bias, sinks=sinks, extra_logits=logits,
                             extra_values=values, k_lengths=lengths, block=5)
    want = variant_reference(q, k, v, (4, 2), dilation=2, n_sinks=3, span_bias=bias, extra_logits=logits,
                             extra_values=values, k_lengths=lengths)
    weights = torch.randn_like(got)
    grads_got = torch.autograd.grad((got * weights).sum(), inputs)
    grads_want = torch.autograd.grad((want * weights).sum(), inputs)
    for a, b in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)




@pytest.mark.parametrize("backend", ["torch", "reference", "triton"])
@pytest.mark.parametrize("dilation", [2, 3])
def test_dilation_is_plain_attention_per_residue_class(backend, dilation):
    if backend == "triton":
        pytest.importorskip("triton")
    g = torch.Generator().manual_seed(dilation)
    q, k, v = (torch.randn(2, 2, 37, 16, generator=g) for _ in range(3))
    lengths = torch.tensor([37, 22])

    def kernel(q, k, v, window, k_lengths):
        return sliding_window_attention(q, k, v, window, k_lengths=k_lengths, backend=backend)

    got = dilated_attention(q, k, v, (3, 2), dilation, k_lengths=lengths, attend=kernel)
    want = variant_reference(q, k, v, (3, 2), dilation=dilation, k_lengths=lengths)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1, :, :22], want[1, :, :22], rtol=1e-4, atol=1e-5)


def test_prefix_summary_is_a_running_softmax_in_any_chunking():
    g = torch.Generator().manual_seed(0)
    logits, values = torch.randn(2, 3, 2, 30, generator=g) * 20, torch.randn(2, 3, 30, 4, generator=g)
    whole, _ = prefix_summary(logits, values)
    for t in (0, 7, 29):  # the definition, position by position
        probs = torch.softmax(logits[..., : t + 1].double(), dim=-1)
        want = torch.einsum("bhgj,bhjd->bhgd", probs, values[:, :, : t + 1].double())
        torch.testing.assert_close(whole[..., t, :], want)
    carry, parts = None, []
    for a, b in ((0, 1), (1, 13), (13, 13), (13, 30)):
        part, carry = prefix_summary(logits[..., a:b], values[:, :, a:b], carry)
        parts.append(part)
    torch.testing.assert_close(torch.cat(parts, dim=-2), whole, rtol=1e-12, atol=1e-12)


def summary_by_definition(logits, values):
    """(B, H, G, T, D): for each t, softmax over positions 0..t (torch's softmax subtracts each row's own max)."""
    out = []
    for t in range(logits.shape[-1]):
        probs = torch.softmax(logits[..., : t + 1].double(), dim=-1)
        out.append(torch.einsum("bhgj,bhjd->bhgd", probs, values[:, :, : t + 1].double()))
    return torch.stack(out, dim=-2)


def chunked_summary(logits, values, bounds, carry=None):
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part, carry = prefix_summary(logits[..., a:b], values[:, :, a:b], carry)
        parts.append(part)
    return torch.cat(parts, dim=-2), carry


@settings(deadline=None, max_examples=30)
@given(late=st.integers(1, 42), jump=st.sampled_from([800.0, 5000.0, 1e6]),
       cuts=st.lists(st.integers(0, 43), max_size=4))
def test_a_score_far_above_all_earlier_ones_keeps_every_prefix_finite_and_exact(late, jump, cuts):
    """exp(-745) is 0 in float64: scaling every prefix by the pass's largest score gave 0/0 before it."""
    g = torch.Generator().manual_seed(late)
    logits, values = torch.randn(1, 2, 2, 43, generator=g, dtype=torch.float64), torch.randn(1, 2, 43, 3, generator=g)
    logits[..., late] += jump
    # A score of size S is itself only known to S * eps, and so is the softmax of it: the tolerance scales so.
    tol = 16 * torch.finfo(torch.float64).eps * logits.abs().max().item()
    whole, (m, total, acc) = prefix_summary(logits, values)
    assert torch.isfinite(whole).all()
    torch.testing.assert_close(whole, summary_by_definition(logits, values), rtol=tol, atol=tol)
    empty = (torch.full((1, 2, 2), -math.inf), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, 3))  # a fresh stream
    chunked, (m2, total2, acc2) = chunked_summary(logits, values, [0, *sorted(cuts), 43], carry=empty)
    torch.testing.assert_close(chunked, whole, rtol=tol, atol=tol)
    torch.testing.assert_close(acc2 / total2[..., None], acc / total[..., None], rtol=tol, atol=tol)
    assert torch.equal(m, m2)


def test_prefix_summary_gradients_equal_the_definitions_and_stay_finite_after_a_huge_score():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(1, 2, 2, 17, generator=g, dtype=torch.float64) * 5).requires_grad_()
    values = torch.randn(1, 2, 17, 3, generator=g, dtype=torch.float64).requires_grad_()
    weights = torch.randn(1, 2, 2, 17, 3, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((prefix_summary(logits, values)[0] * weights).sum(), [logits, values])
    want = torch.autograd.grad((summary_by_definition(logits, values) * weights).sum(), [logits, values])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        logits[..., 9] += 1e4
    got = torch.autograd.grad((prefix_summary(logits, values)[0] * weights).sum(), [logits, values])
    want = torch.autograd.grad((summary_by_definition(logits, values) * weights).sum(), [logits, values])
    for a, b in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _triton_runs() -> bool:
    try:
        from swa_stream.kernels import triton_swa

        probe = torch.ones(1, 1, 1, 16)
        triton_swa.triton_attention(probe, probe, probe, (0, 0))
        return triton_swa.INTERPRET or torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - any failure means: no Triton here
        return False


@pytest.mark.skipif(not _triton_runs(), reason="Triton's interpreter cannot run the kernels here")
@pytest.mark.parametrize("fields", [dict(sink_tokens=2), dict(global_tokens=2),
                                    dict(global_tokens=1, sink_tokens=2, dilation=[1, 2])])
def test_triton_composition_equals_the_pytorch_path_forward_and_backward(fields):
    from swa_stream import SWAConfig, SWAEncoder

    torch.manual_seed(0)
    cfg = SWAConfig(d_model=32, n_heads=2, n_layers=2, window=(3, 1), **fields)
    torch_path, triton_path = SWAEncoder(cfg, backend="torch"), SWAEncoder(cfg, backend="triton")
    triton_path.load_state_dict(torch_path.state_dict())
    x, lengths = torch.randn(2, 19, 32, requires_grad=True), torch.tensor([19, 11])
    weights = torch.randn(2, 19, 32)
    results = []
    for enc in (torch_path, triton_path):
        y = enc(x, lengths)
        results.append((y, torch.autograd.grad((y * weights).sum(), [x, *enc.parameters()])))
    (y_torch, g_torch), (y_triton, g_triton) = results
    torch.testing.assert_close(y_triton, y_torch, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_triton, g_torch, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
