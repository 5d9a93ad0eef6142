"""The key property of the project: streaming with step/flush equals the offline forward pass."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import StreamState, SWAConfig, SWAEncoder

D_MODEL, HEADS = 16, 2


def make_encoder(window, n_layers, seed=0, backend="auto"):
    torch.manual_seed(seed)
    cfg = SWAConfig(d_model=D_MODEL, n_heads=HEADS, n_layers=n_layers, window=window)
    return SWAEncoder(cfg, backend=backend).eval()


def chunking(draw, total):
    sizes = []
    while sum(sizes) < total:
        sizes.append(min(total - sum(sizes), draw(st.integers(1, 40))))
    return sizes


windows = st.tuples(st.integers(0, 12), st.integers(0, 4))


@st.composite
def stream_case(draw):
    n_layers = draw(st.integers(1, 3))
    window = draw(st.one_of(windows, st.lists(windows, min_size=n_layers, max_size=n_layers)))
    batch = draw(st.integers(1, 2))
    length = draw(st.integers(1, 70))
    return window, n_layers, batch, length, chunking(draw, length)


@settings(deadline=None, max_examples=60)
@given(case=stream_case())
@torch.no_grad()
def test_streaming_equals_offline_for_any_chunking(case, stream):
    window, n_layers, batch, length, sizes = case
    enc = make_encoder(window, n_layers)
    x = torch.randn(batch, length, D_MODEL)
    streamed, *_ = stream(enc, x, sizes)
    torch.testing.assert_close(streamed, enc(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("window", [(8, 0), (6, 3), [(3, 0), (8, 2), (5, 1)]])
@pytest.mark.parametrize("chunk", [1, 5, 8, 9, 17, 100])  # below, at and above the window, uneven
@torch.no_grad()
def test_chunks_below_at_and_above_the_window(window, chunk, stream):
    enc = make_encoder(window, 3)
    x = torch.randn(2, 61, D_MODEL)
    sizes = [chunk] * (61 // chunk) + ([61 % chunk] if 61 % chunk else [])
    streamed, *_ = stream(enc, x, sizes)
    torch.testing.assert_close(streamed, enc(x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_step_emits_a_position_once_every_layer_has_its_right_context(stream):
    enc = make_encoder([(4, 2), (4, 0), (4, 3)], 3)
    lookahead = enc.cfg.lookahead
    assert lookahead == 5
    _, outs, _ = stream(enc, torch.randn(1, 30, D_MODEL), [1] * 30)
    emitted = torch.tensor([o.shape[1] for o in outs]).cumsum(0)
    received = torch.arange(1, 31)
    assert torch.equal(emitted, (received - lookahead).clamp(min=0))


@torch.no_grad()
def test_flush_of_a_stream_shorter_than_the_lookahead(stream):
    enc = make_encoder((3, 6), 2)
    x = torch.randn(1, 4, D_MODEL)
    streamed, outs, _ = stream(enc, x, [1, 3])
    assert sum(o.shape[1] for o in outs) == 0
    torch.testing.assert_close(streamed, enc(x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_state_size_is_constant_over_a_long_stream():
    enc = make_encoder([(5, 2), (3, 1)], 2)
    state = enc.init_state(batch_size=2)
    shapes = [tuple(t.shape) for t in state.to_tensors().values()]
    for size in [1, 7, 50, 3, 200, 1]:
        _, state = enc.step(torch.randn(2, size, D_MODEL), state)
        assert [tuple(t.shape) for t in state.to_tensors().values()] == shapes
        assert state.nbytes() == 2 * enc.cfg.state_bytes()


@torch.no_grad()
def test_start_position_does_not_change_outputs(stream):
    enc = make_encoder([(9, 2), (9, 0)], 2)
    x = torch.randn(2, 40, D_MODEL)
    at_zero, *_ = stream(enc, x, [3, 13, 24])
    far, *_ = stream(enc, x, [3, 13, 24], start_position=10**9)
    forever, *_ = stream(enc, x, [40], start_position=10**15 + 12345)
    torch.testing.assert_close(far, at_zero, rtol=0, atol=1e-4)
    torch.testing.assert_close(forever, at_zero, rtol=0, atol=1e-4)


@torch.no_grad()
def test_state_survives_a_save_and_restore_mid_stream(tmp_path, stream):
    from safetensors.torch import load_file, save_file

    enc = make_encoder((6, 2), 2)
    x = torch.randn(1, 30, D_MODEL)
    state = enc.init_state(1, start_position=77)
    first, state = enc.step(x[:, :13], state)
    save_file(state.to_tensors(), tmp_path / "state.safetensors")
    restored = StreamState.from_tensors(load_file(tmp_path / "state.safetensors"))
    second, restored = enc.step(x[:, 13:], restored)
    streamed = torch.cat([first, second, enc.flush(restored)], dim=1)
    offline, *_ = stream(enc, x, [30], start_position=77)
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-5)


@settings(deadline=None, max_examples=20)
@given(case=stream_case(), data=st.data())
@torch.no_grad()
def test_padded_batch_rows_equal_each_sequence_alone(case, data):
    window, n_layers, _, length, _ = case
    enc = make_encoder(window, n_layers)
    lengths = torch.tensor([length, data.draw(st.integers(1, length))])
    x = torch.randn(2, length, D_MODEL)
    y = enc(x, lengths=lengths)
    for b in range(2):
        n = int(lengths[b])
        torch.testing.assert_close(y[b, :n], enc(x[b : b + 1, :n])[0], rtol=0, atol=1e-5)
        assert torch.count_nonzero(y[b, n:]) == 0


@torch.no_grad()
def test_encoder_on_the_dense_reference_kernel_agrees():
    x = torch.randn(2, 45, D_MODEL)
    fast = make_encoder([(7, 2), (3, 0)], 2, backend="torch")
    ref = make_encoder([(7, 2), (3, 0)], 2, backend="reference")
    torch.testing.assert_close(fast(x), ref(x), rtol=0, atol=1e-5)


def test_wrong_chunk_shape_is_rejected():
    enc = make_encoder((4, 0), 1)
    with pytest.raises(ValueError, match="chunk must be"):
        enc.step(torch.randn(2, 3, D_MODEL + 1), enc.init_state(2))


def test_receptive_field_is_reported_by_the_encoder():
    assert make_encoder([(4, 2), (6, 0)], 2).receptive_field() == (10, 2)


@torch.no_grad()
def test_triton_kernels_in_the_encoder_stream_exactly_under_the_interpreter(stream):
    """The encoder on the Triton backend (fused attention offline, the in-place ring kernel when
    streaming) agrees with the PyTorch backend and with itself streamed. Head size 16: the kernels'
    smallest."""
    pytest.importorskip("triton")
    from swa_stream.kernels import triton_swa

    if not triton_swa.INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 was not set before triton was imported")
    torch.manual_seed(0)
    cfg = SWAConfig(d_model=32, n_heads=2, n_layers=2, window=[(5, 2), (3, 0)])
    triton_enc = SWAEncoder(cfg, backend="triton").eval()
    torch_enc = SWAEncoder(cfg, backend="torch").eval()
    torch_enc.load_state_dict(triton_enc.state_dict())
    x = torch.randn(2, 23, 32)
    offline = triton_enc(x)
    torch.testing.assert_close(offline, torch_enc(x), rtol=0, atol=1e-5)
    streamed, *_ = stream(triton_enc, x, [1, 6, 9, 7])
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-5)


@pytest.mark.parametrize("window", [[(0, 0), (3, 2), (5, 0)], (7, 1)])
@pytest.mark.parametrize("start, dtype, batch", [(0, torch.float32, 2), (10**12 + 17, torch.float64, 1),
                                                 (5, torch.float32, 3)])
def test_inference_step_equals_the_autograd_step(window, start, dtype, batch, stream):
    """Without autograd, a plain layer's step takes the lean path (2-D products, slot-order ring
    attention); with it, the general one. Same outputs, same states, and both equal offline."""
    enc = make_encoder(window, 3).to(dtype)
    x = torch.randn(batch, 47, D_MODEL, dtype=dtype)
    sizes = [4, 1, 0, 9, 4, 4, 13, 0, 12]
    with torch.no_grad():
        fast, _, fast_state = stream(enc, x, sizes, start)
        offline = enc(x)
    slow, _, slow_state = stream(enc, x, sizes, start)  # grad enabled: the general path
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(fast, offline, rtol=0, atol=1e-5)
    for a, b in zip(fast_state.layers, slow_state.layers, strict=True):
        for name, t in a.tensors().items():
            torch.testing.assert_close(t, b.tensors()[name].detach(), rtol=0, atol=1e-5)


@torch.no_grad()
def test_inference_step_sees_changed_weights(stream):
    """The lean path reads the weights where they are, so every way of changing them reaches it."""
    enc = make_encoder((5, 1), 2)
    x = torch.randn(1, 20, D_MODEL)

    def check(atol=1e-5, x=x):
        torch.testing.assert_close(stream(enc, x, [4] * 5)[0], enc(x), rtol=0, atol=atol)

    check()
    enc.blocks[1].ffn[2].weight.mul_(-2.0)  # in place
    enc.blocks[0].attn.qkv.bias.add_(0.5)
    check()
    enc.blocks[0].attn.qkv.weight.data.copy_(torch.randn_like(enc.blocks[0].attn.qkv.weight))  # behind autograd
    check()
    enc.blocks[1].attn.out.weight = torch.nn.Parameter(torch.randn(D_MODEL, D_MODEL))  # replaced
    check()
    enc.load_state_dict({k: v + 0.1 for k, v in enc.state_dict().items()}, assign=True)
    check()
    enc = enc.double()
    check(atol=1e-9, x=x.double())


def test_inference_step_of_a_model_built_in_inference_mode(stream):
    with torch.inference_mode():
        enc = make_encoder([(4, 0), (3, 2)], 2)
        x = torch.randn(2, 30, D_MODEL)
        torch.testing.assert_close(stream(enc, x, [7, 1, 22])[0], enc(x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_hooks_and_quantised_linears_take_the_general_path(stream):
    """A hook on a part, or a part that is not the stock module, must behave as the modules do."""
    enc = make_encoder((5, 1), 2)
    x = torch.randn(1, 20, D_MODEL)
    handle = enc.blocks[0].attn.qkv.register_forward_hook(lambda module, args, out: out * 0.5)
    torch.testing.assert_close(stream(enc, x, [4] * 5)[0], enc(x), rtol=0, atol=1e-5)
    handle.remove()
    quantised = torch.ao.quantization.quantize_dynamic(enc, {torch.nn.Linear}, dtype=torch.qint8)
    fast = stream(quantised, x, [4] * 5)[0]  # (dynamic quantisation scales each call's activations, so
    with torch.enable_grad():                     # only the same chunks compare: the general path's)
        general = stream(quantised, x, [4] * 5)[0]
    torch.testing.assert_close(fast, general, rtol=0, atol=1e-6)


def test_a_stock_plain_block_takes_the_lean_path_without_autograd(monkeypatch, stream):
    from swa_stream.encoder import SWAEncoder

    calls = []
    lean = SWAEncoder._step_inference
    monkeypatch.setattr(SWAEncoder, "_step_inference", lambda self, *args: calls.append(1) or lean(self, *args))
    enc = make_encoder((5, 1), 2)
    x = torch.randn(1, 12, D_MODEL)
    stream(enc, x, [4] * 3)
    assert not calls  # autograd on: the general path
    with torch.no_grad():
        stream(enc, x, [4] * 3)
    assert calls
    assert enc.blocks[0].attn.qkv.weight.stride() == (1, 3 * D_MODEL)  # stored transposed (column_major)
