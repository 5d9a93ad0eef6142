"""The blocked CPU path ("torch" backend) equals the dense reference, forward and backward.

Errors are measured relative to the size of the expected tensor, never against a fixed atol. Low precision
follows FlashAttention's rule: at most twice the error of a plain PyTorch run in the same precision.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.kernels import blocked_attention, cpu, sliding_window_attention
from swa_stream.kernels.reference import attention_reference, visibility_mask

windows = st.one_of(
    st.tuples(st.integers(0, 12), st.integers(0, 12)),
    st.tuples(st.integers(0, 200), st.integers(0, 200)),  # often wider than the sequence
)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|; exactly 0 only when both are equal."""
    err = (got.double() - expected.double()).abs().max().item() if got.numel() else 0.0
    scale = expected.double().abs().max().item() if expected.numel() else 0.0
    return err / scale if scale > 0 else err


def random_qkv(batch, heads, n_q, n_k, dim, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=gen, dtype=dtype).requires_grad_() for n in (n_q, n_k, n_k)]


def output_and_grads(attend, q, k, v, seed=0):
    out = attend(q, k, v)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


def assert_matches_reference(q, k, v, window, rel, attend=None, **placement):
    attend = attend or (lambda q, k, v: sliding_window_attention(q, k, v, window, backend="torch", **placement))
    got = output_and_grads(attend, q, k, v)
    expected = output_and_grads(
        lambda q, k, v: sliding_window_attention(q, k, v, window, backend="reference", **placement), q, k, v
    )
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.isfinite(a).all(), name
        assert relative_error(a, b) <= rel, f"{name}: relative error {relative_error(a, b):.2e}"


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


@settings(deadline=None, max_examples=60)
@given(
    n_q=st.integers(1, 80),
    n_k=st.integers(0, 90),
    window=windows,
    placement=placements,
    use_lengths=st.booleans(),
    heads=st.integers(1, 2),
)
def test_float32_output_and_gradients_match_the_reference(n_q, n_k, window, placement, use_lengths, heads):
    q, k, v = random_qkv(2, heads, n_q, n_k, 8, torch.float32, seed=n_q * 1000 + n_k)
    assert_matches_reference(q, k, v, window, rel=2e-5, **resolve(placement, n_k, use_lengths))


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
    attend = lambda q, k, v: blocked_attention(q, k, v, window, block=block, **where)  # noqa: E731
    assert_matches_reference(q, k, v, window, rel=1e-12, attend=attend, **where)


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
    out, dq, dk, dv = output_and_grads(
        lambda q, k, v: sliding_window_attention(q, k, v, window, backend="torch", **placement), q, k, v
    )
    sees = visibility_mask(16, 16, window, **placement).expand(2, 2, 16, 16)
    blind_rows = ~sees.any(-1)
    blind_keys = ~sees.any(-2)
    assert blind_rows.any()
    for t in (out, dq, dk, dv):
        assert torch.isfinite(t).all()
    assert (out[blind_rows] == 0).all() and (dq[blind_rows] == 0).all()
    assert (dk[blind_keys] == 0).all() and (dv[blind_keys] == 0).all()
    assert_matches_reference(q, k, v, window, rel=2e-5, **placement)


def plain_attention(q, k, v, window, **placement):
    """Attention computed entirely in the inputs' precision, as a user would write it."""
    mask = visibility_mask(q.shape[2], k.shape[2], window, **placement)
    scores = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(~mask, float("-inf"))
    return scores.softmax(-1).nan_to_num(0.0) @ v


def test_bfloat16_error_is_at_most_twice_plain_bfloat16():
    q32, k32, v32 = random_qkv(2, 2, 100, 120, 16, torch.float32, seed=3)
    window, where = (31, 2), dict(q_offset=20, k_lengths=torch.tensor([120, 70]))
    q, k, v = (x.detach().bfloat16().requires_grad_() for x in (q32, k32, v32))

    def backend(name):
        return lambda q, k, v: sliding_window_attention(q, k, v, window, backend=name, **where)

    truth = output_and_grads(backend("reference"), q32, k32, v32)
    ours = output_and_grads(backend("torch"), q, k, v)
    plain = output_and_grads(lambda q, k, v: plain_attention(q, k, v, window, **where), q, k, v)
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), ours, plain, truth, strict=True):
        assert a.dtype == torch.bfloat16, name
        assert relative_error(a, c) <= 2 * relative_error(b, c), name


def test_long_sequence_across_many_chunks(monkeypatch):
    """Edge blocks, shared-band interior blocks and chunk boundaries all in one sequence."""
    monkeypatch.setattr(cpu, "GRAD_SLAB_BYTES", 2**17)  # a few blocks per backward call
    q, k, v = random_qkv(2, 2, 700, 700, 16, torch.float32, seed=7)
    where = dict(k_start=3, k_lengths=torch.tensor([700, 401]))
    assert_matches_reference(q, k, v, (129, 0), rel=2e-5, **where)
    assert_matches_reference(q, k, v, (20, 45), rel=2e-5, **where)


def test_non_contiguous_inputs_and_a_custom_scale():
    """Projections usually arrive as (B, T, H, D) and are transposed, not copied, into (B, H, T, D)."""
    q, k, v = (
        x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
        for x in random_qkv(1, 3, 50, 60, 8, torch.float32, seed=1)
    )
    assert not q.is_contiguous()
    assert_matches_reference(q, k, v, (7, 3), rel=2e-5, q_offset=10, scale=0.3)


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
    order = [(end - capacity + j) % capacity for j in range(capacity)]
    keys, values = torch.cat([k_ring[:, :, order], k_new], 2), torch.cat([v_ring[:, :, order], v_new], 2)
    k_start = max(0, stream_start - (end - capacity))
    want = attention_reference(q.double(), keys.double(), values.double(), window, q_offset=window[0], k_start=k_start)
    got = ring_attention_torch(q, k_ring, v_ring, k_new, v_new, window, end=end, stream_start=stream_start)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())  # values reach 30
    assert (n_q * (capacity + n_new) > SMALL_STEP) == (window == (64, 8))  # both paths are covered
