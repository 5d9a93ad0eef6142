"""The blocked CPU path ("torch" backend) equals the dense reference, forward and backward.

Low precision (bfloat16) follows FlashAttention's rule (kernels/testing.py): against the float64 reference,
at most twice the relative error of a plain PyTorch run in the same precision. Float32 and float64 are held
to a relative error instead (2e-5 and 1e-12 of the values' size): a plain float32 run is exact to ~1e-7, and
the blocked path sums in another order (dk over blocks), so twice that is a test of summation order, not of
correctness (hypothesis found dk at 4.7x plain's 1.2e-7 error, window (24, 1)).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.kernels import blocked_attention, cpu, sliding_window_attention
from swa_stream.kernels.testing import (
    assert_flash_rule,
    attention_reference,
    flash_checks,
    flash_rule,
    forward_backward,
    plain_attention,
    relative_error,
    ring_in_position_order,
    visibility_mask,
)

windows = st.one_of(
    st.tuples(st.integers(0, 12), st.integers(0, 12)),
    st.tuples(st.integers(0, 200), st.integers(0, 200)),  # often wider than the sequence
)


def random_qkv(batch, heads, n_q, n_k, dim, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=gen, dtype=dtype).requires_grad_() for n in (n_q, n_k, n_k)]


def torch_backend(q, k, v, window, **placement):
    return sliding_window_attention(q, k, v, window, backend="torch", **placement)


RELATIVE = {torch.float32: 2e-5, torch.float64: 1e-12}  # see the module docstring


def assert_matches_reference(q, k, v, window, attend=torch_backend, **placement):
    """out, dq, dk, dv of `attend(q, k, v, window, **placement)` against the dense reference."""
    grad_out = torch.randn(q.shape[:-1] + v.shape[-1:], generator=torch.Generator().manual_seed(0), dtype=q.dtype)
    if q.dtype in RELATIVE:
        got = forward_backward(lambda *t: attend(*t, window, **placement), [q, k, v], grad_out)
        precise = forward_backward(lambda *t: attention_reference(*t, window, **placement),
                                   [t.double() for t in (q, k, v)], grad_out.double())
        for name, a, b in zip(("out", "dq", "dk", "dv"), got, precise, strict=True):
            err = relative_error(a, b)
            assert torch.isfinite(a).all() and err <= RELATIVE[q.dtype], f"{name}: relative error {err:.2e}"
    else:
        got, checks = flash_checks(attend, q, k, v, window, grad_out=grad_out, **placement)
        assert_flash_rule(checks)
    for name, a, x in zip(("out", "dq", "dk", "dv"), got, (q, q, k, v), strict=True):
        assert a.dtype == q.dtype and a.shape[:-1] == x.shape[:-1], name
    return got


placements = st.fixed_dictionaries(
    {
        "q_offset": st.integers(-4, 60),
        "k_start": st.integers(-2, 12),
        "lengths": st.lists(st.integers(0, 100), min_size=2, max_size=2),
    }
)


def resolve(placement, n_k, use_lengths):
    lengths = torch.tensor([min(n, n_k + 2) for n in placement["lengths"]]) if use_lengths else None
    return dict(q_offset=placement["q_offset"], k_start=placement["k_start"], k_lengths=lengths)


# Shapes and placements of the float32 tests, the training and the inference ones alike.
shapes = dict(n_q=st.integers(1, 80), n_k=st.integers(0, 90), window=windows, placement=placements,
              use_lengths=st.booleans())


@settings(deadline=None, max_examples=60)
@given(**shapes, heads=st.integers(1, 2))
def test_float32_output_and_gradients_match_the_reference(n_q, n_k, window, placement, use_lengths, heads):
    q, k, v = random_qkv(2, heads, n_q, n_k, 8, torch.float32, seed=n_q * 1000 + n_k)
    assert_matches_reference(q, k, v, window, **resolve(placement, n_k, use_lengths))


@settings(deadline=None, max_examples=40)
@given(
    n_q=st.integers(1, 30),
    n_k=st.integers(1, 40),
    window=windows,
    placement=placements,
    use_lengths=st.booleans(),
    block=st.integers(1, 9),
)
def test_every_block_size_is_exact_in_float64(n_q, n_k, window, placement, use_lengths, block):
    q, k, v = random_qkv(2, 1, n_q, n_k, 4, torch.float64, seed=block)
    where = resolve(placement, n_k, use_lengths)
    attend = lambda q, k, v, window, **where: blocked_attention(q, k, v, window, block=block, **where)  # noqa: E731
    assert_matches_reference(q, k, v, window, attend=attend, **where)


@pytest.mark.parametrize(
    "n_q, n_k, window, q_offset, k_start, lengths, block",
    [
        (7, 7, (3, 0), 0, 0, None, 2),  # causal self-attention over several blocks
        (5, 9, (0, 3), 1, 0, None, None),  # left = 0, right > 0
        (6, 5, (50, 50), 0, 1, [5, 2], 4),  # window wider than the sequence; padding per batch
        (4, 12, (4, 1), 8, 0, [12, 9], 3),  # streaming: a chunk after its cached keys
        (6, 8, (1, 0), 0, 3, [8, 0], 2),  # rows (and a whole batch element) that see no key
    ],
)
def test_gradcheck_in_float64(n_q, n_k, window, q_offset, k_start, lengths, block):
    q, k, v = random_qkv(2, 2, n_q, n_k, 3, torch.float64, seed=n_q)
    lengths = None if lengths is None else torch.tensor(lengths)

    def attend(q, k, v):
        return blocked_attention(q, k, v, window, q_offset=q_offset, k_start=k_start, k_lengths=lengths, block=block)

    assert torch.autograd.gradcheck(attend, (q, k, v), fast_mode=True)


@pytest.mark.parametrize(
    "placement",
    [
        dict(k_start=20),  # every key before k_start: no row sees anything
        dict(k_start=9),  # the first rows' windows end before k_start
        dict(k_lengths=torch.tensor([0, 3])),  # an empty batch element; another with 3 keys
        dict(q_offset=100),  # all queries far past the keys
    ],
)
def test_rows_that_see_no_key_give_zeros_and_zero_gradients(placement):
    q, k, v = random_qkv(2, 2, 16, 16, 8, torch.float32, seed=0)
    window = (4, 0)
    out, dq, dk, dv = forward_backward(lambda *t: torch_backend(*t, window, **placement), [q, k, v],
                                       torch.randn(q.shape, generator=torch.Generator().manual_seed(0)))
    sees = visibility_mask(16, 16, window, **placement).expand(2, 2, 16, 16)
    blind_rows = ~sees.any(-1)
    blind_keys = ~sees.any(-2)
    assert blind_rows.any()
    for t in (out, dq, dk, dv):
        assert torch.isfinite(t).all()
    assert (out[blind_rows] == 0).all() and (dq[blind_rows] == 0).all()
    assert (dk[blind_keys] == 0).all() and (dv[blind_keys] == 0).all()
    assert_matches_reference(q, k, v, window, **placement)


# ---- inference: no gradient wanted, so no log-sum-exp; batched products or the kernel (cpu._inference) ----
@settings(deadline=None, max_examples=60)
@given(**shapes, block=st.sampled_from([None, 1, 3, 8]), run=st.sampled_from([1, 2, 128]))
def test_inference_matches_the_reference(n_q, n_k, window, placement, use_lengths, block, run):
    where = resolve(placement, n_k, use_lengths)
    for products in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cpu, "SLAB_RUN", run)  # runs of blocks cut anywhere, edge masks included
            patch.setattr(cpu, "products_pay", lambda g, products=products: products)
            check_inference(n_q, n_k, window, where, block)


def check_inference(n_q, n_k, window, where, block):
    for dtype in (torch.float32, torch.float64):
        q, k, v = (x.detach() for x in random_qkv(2, 2, n_q, n_k, 8, dtype, seed=n_q * 1000 + n_k))
        with torch.inference_mode():
            got = blocked_attention(q, k, v, window, block=block, **where)
        precise = attention_reference(q.double(), k.double(), v.double(), window, **where)
        assert got.dtype == dtype and got.shape == q.shape
        assert relative_error(got, precise) <= RELATIVE[dtype]
        sees = visibility_mask(n_q, n_k, window, **where).expand(2, 2, n_q, n_k)
        assert (got[~sees.any(-1)] == 0).all()  # rows that see no key: zeros, as the kernel gives them


def test_which_form_runs(monkeypatch):
    """Without autograd (no_grad, inference mode, or inputs that need no gradient) in float32, on more than one
    thread and narrow slabs: the batched products. With autograd, in low precision, on one thread or with wide
    slabs: the flash kernel."""
    calls = []
    monkeypatch.setattr(cpu, "_attend_slabs", lambda *a: calls.append("products") or attend_slabs(*a))
    monkeypatch.setattr(cpu, "_flash_forward", lambda *a, **kw: calls.append("kernel") or flash(*a, **kw))
    q, k, v = random_qkv(1, 2, 40, 40, 8, torch.float32, seed=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            blocked_attention(q, k, v, (5, 5))
        blocked_attention(q.detach(), k.detach(), v.detach(), (5, 5))
        assert set(calls) == {"products"}
        calls.clear()
        blocked_attention(q, k, v, (5, 5)).sum().backward()
        with torch.no_grad():
            blocked_attention(*(x.to(torch.bfloat16) for x in (q, k, v)), (5, 5))
            long = torch.randn(1, 1, 2000, 8)
            blocked_attention(long, long, long, (300, 300))  # 128-row blocks, slabs of 728 keys
        torch.set_num_threads(1)
        with torch.no_grad():
            blocked_attention(q, k, v, (5, 5))
        assert set(calls) == {"kernel"} and len(calls) >= 4
    finally:
        torch.set_num_threads(threads)


attend_slabs, flash = cpu._attend_slabs, cpu._flash_forward


def test_bfloat16_obeys_the_flash_rule():
    q, k, v = random_qkv(2, 2, 100, 120, 16, torch.bfloat16, seed=3)
    got = assert_matches_reference(q, k, v, (31, 2), q_offset=20, k_lengths=torch.tensor([120, 70]))
    assert all(t.dtype == torch.bfloat16 for t in got)


def test_long_sequence_across_many_chunks(monkeypatch):
    """Edge blocks, shared-band interior blocks and chunk boundaries all in one sequence."""
    monkeypatch.setattr(cpu, "GRAD_SLAB_BYTES", 2**17)  # a few blocks per backward call
    q, k, v = random_qkv(2, 2, 700, 700, 16, torch.float32, seed=7)
    where = dict(k_start=3, k_lengths=torch.tensor([700, 401]))
    assert_matches_reference(q, k, v, (129, 0), **where)
    assert_matches_reference(q, k, v, (20, 45), **where)


def test_non_contiguous_inputs_and_a_custom_scale():
    """Projections usually arrive as (B, T, H, D) and are transposed, not copied, into (B, H, T, D)."""
    q, k, v = (
        x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
        for x in random_qkv(1, 3, 50, 60, 8, torch.float32, seed=1)
    )
    assert not q.is_contiguous()
    assert_matches_reference(q, k, v, (7, 3), q_offset=10, scale=0.3)


def test_empty_query_chunk():
    q, k, v = random_qkv(1, 2, 0, 5, 8, torch.float32, seed=0)
    assert sliding_window_attention(q, k, v, (2, 0), backend="torch").shape == (1, 2, 0, 8)


# ---- the PyTorch streaming step over the ring buffer ---------------------------------------------------
@pytest.mark.parametrize(
    "window, end, stream_start, n_new, n_q",
    [
        ((6, 2), 10**12 + 7, 0, 5, 7),  # small steps take one masked SDPA call
        ((9, 3), 20, 15, 4, 7),  # the stream starts inside the ring
        ((5, 0), 3, 0, 1, 1),  # causal, the ring not yet full
        ((4, 4), 10**12 + 7, 10**12 - 1, 0, 4),  # flush: no new keys
        ((64, 8), 10**9, 0, 150, 158),  # 158 x 222 pairs: above SMALL_STEP, the blocked path
    ],
)
def test_ring_step_matches_the_dense_definition(window, end, stream_start, n_new, n_q):
    from swa_stream.kernels.ring import SMALL_STEP, ring_attention_torch

    gen = torch.Generator().manual_seed(n_new)
    capacity = window[0] + window[1]

    def rand(n, spread=1.0):
        return spread * torch.randn(2, 2, n, 16, generator=gen)

    q, k_new, v_new = rand(n_q), rand(n_new), rand(n_new)
    k_ring, v_ring = rand(capacity, 30.0), rand(capacity, 30.0)  # slots before the stream start hold junk
    keys, values, where = ring_in_position_order(k_ring, v_ring, k_new, v_new, window, end=end,
                                                 stream_start=stream_start)
    got = ring_attention_torch(q, k_ring, v_ring, k_new, v_new, window, end=end, stream_start=stream_start)
    precise = attention_reference(q.double(), keys.double(), values.double(), window, **where)
    assert_flash_rule(flash_rule(got, precise, plain_attention(q, keys, values, window, **where)))
    assert (n_q * (capacity + n_new) > SMALL_STEP) == (window == (64, 8))  # both paths are covered
