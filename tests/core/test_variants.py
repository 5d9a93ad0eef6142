"""The variants (global tokens, sinks, dilation, downsampling, adaptive span) keep the project's promise:
streaming equals offline for any chunking, the state stays fixed, and SWAConfig's accounting (receptive
field, lookahead, state bytes) is what the encoder really does."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import StreamState, SWAConfig, SWAEncoder
from swa_stream.errors import ConfigError

D_MODEL, HEADS = 16, 2


def build(seed=0, **fields):
    torch.manual_seed(seed)
    enc = SWAEncoder(SWAConfig(d_model=D_MODEL, n_heads=HEADS, **fields)).eval()
    with torch.no_grad():  # learned spans somewhere inside the window, so that trimming matters
        for block in enc.blocks:
            if block.attn.span is not None:
                block.attn.span.uniform_(0, 1)
    return enc


windows = st.tuples(st.integers(0, 6), st.integers(0, 3))


@st.composite
def variant_case(draw):
    n_layers = draw(st.integers(1, 3))
    per_layer = st.lists(st.integers(1, 3), min_size=n_layers, max_size=n_layers)
    fields = dict(
        n_layers=n_layers,
        window=draw(st.one_of(windows, st.lists(windows, min_size=n_layers, max_size=n_layers))),
        global_tokens=draw(st.integers(0, 2)),
        sink_tokens=draw(st.integers(0, 3)),
        dilation=draw(st.one_of(st.integers(1, 3), per_layer)),
        downsample=draw(st.one_of(st.none(), per_layer)),
        adaptive_span=draw(st.booleans()),
        span_ramp=draw(st.integers(1, 3)),
    )
    length = draw(st.integers(1, 60))
    sizes = []
    while sum(sizes) < length:
        sizes.append(min(length - sum(sizes), draw(st.integers(1, 25))))
    start = draw(st.sampled_from([0, 5, 10**9]))
    return fields, draw(st.integers(1, 2)), length, sizes, start


@settings(deadline=None, max_examples=80)
@given(case=variant_case())
@torch.no_grad()
def test_every_variant_streams_exactly_for_any_chunking(case, stream):
    fields, batch, length, sizes, start = case
    enc = build(**fields)
    x = torch.randn(batch, length, D_MODEL)
    streamed, *_ = stream(enc, x, sizes, start)
    torch.testing.assert_close(streamed, enc(x), rtol=0, atol=1e-5)


VARIANTS = {
    "global": dict(global_tokens=2),
    "sinks": dict(sink_tokens=3),
    "dilation": dict(dilation=[1, 3]),
    "downsample": dict(downsample=[2, 3]),
    "adaptive": dict(adaptive_span=True, window=(12, 1)),
    "all": dict(global_tokens=1, sink_tokens=2, dilation=2, downsample=[1, 2], adaptive_span=True),
}


@pytest.mark.parametrize("name", VARIANTS)
@torch.no_grad()
def test_a_padded_batch_equals_each_sequence_alone(name):
    fields = {"n_layers": 2, "window": (4, 1), **VARIANTS[name]}
    enc = build(**fields)
    x, lengths = torch.randn(2, 29, D_MODEL), torch.tensor([29, 13])
    y = enc(x, lengths)
    torch.testing.assert_close(y[1, :13], enc(x[1:, :13])[0], rtol=0, atol=1e-5)
    assert y[1, 13:].abs().max() == 0


@pytest.mark.parametrize("name", VARIANTS)
@torch.no_grad()
def test_state_stays_fixed_and_matches_the_config_accounting(name):
    fields = {"n_layers": 2, "window": (4, 1), **VARIANTS[name]}
    enc = build(**fields)
    state = enc.init_state(1)
    sizes = set()
    for _ in range(40):
        _, state = enc.step(torch.randn(1, 7, D_MODEL), state)
        sizes.add(sum(t.numel() for ls in state.layers for n, t in ls.tensors().items() if n != "pool"))
    assert len(sizes) == 1  # nothing grows with the stream (the pooling remainder varies, below stride)
    cfg = enc.cfg
    bypass = cfg.bypass_rows() * D_MODEL * 4  # full-rate rows waiting for the pooled layers: at most this
    expected = sum(cfg.layer_state_bytes(i, left=b.attn.cache_left()) for i, b in enumerate(enc.blocks)) + bypass
    slack = sum(s - 1 for s in cfg.strides) * D_MODEL * 4 + bypass
    assert expected - slack <= state.nbytes() <= expected
    restored = StreamState.from_tensors(state.to_tensors())
    torch.testing.assert_close(enc.flush(restored), enc.flush(state))


def influence(enc, length, position):
    """Input positions whose change moves output `position` (by the gradient)."""
    x = torch.randn(1, length, D_MODEL, requires_grad=True)
    (enc(x)[0, position] * torch.randn(D_MODEL)).sum().backward()  # a plain sum of a LayerNorm is constant
    return (x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()


@pytest.mark.parametrize(
    "fields",
    [
        dict(window=[(3, 1), (2, 2)], dilation=[2, 3]),
        dict(window=(2, 1), downsample=[2, 1, 3]),
        dict(window=[(1, 0), (2, 1), (3, 0)], dilation=[1, 2, 1], downsample=[1, 2, 2]),
    ],
)
def test_receptive_field_is_what_the_gradient_sees(fields):
    enc = build(n_layers=len(fields.get("downsample", fields.get("dilation"))), **fields)
    left, right = enc.cfg.receptive_field()
    seen_left = seen_right = 0
    for position in range(60, 72):  # every phase of the pooled groups, far from the ends
        reached = influence(enc, 140, position)
        seen_left, seen_right = max(seen_left, position - reached[0]), max(seen_right, reached[-1] - position)
    assert (seen_left, seen_right) == (left, right)
    assert enc.cfg.lookahead == right


def test_global_tokens_and_sinks_see_past_the_window():
    for fields, beyond in ((dict(global_tokens=1), range(0, 50)), (dict(sink_tokens=3), range(0, 3))):
        enc = build(n_layers=1, window=(2, 0), **fields)
        reached = influence(enc, 60, 55)
        assert set(beyond) <= set(reached) and 56 not in reached  # the past, never the future


@torch.no_grad()
def test_adaptive_span_trims_the_cache_to_the_widest_learned_span(stream):
    enc = build(n_layers=1, window=(20, 0), adaptive_span=True, span_ramp=2)
    enc.blocks[0].attn.span.copy_(torch.tensor([3.0, 6.5]) / 20)  # z = 3 and 6.5 positions
    assert enc.blocks[0].attn.head_spans() == [4, 8]  # ceil(ramp + z) - 1
    assert enc.blocks[0].attn.cache_left() == 8
    state = enc.init_state(1)
    assert state.layers[0].k.shape[2] == 8
    x = torch.randn(1, 50, D_MODEL)
    torch.testing.assert_close(stream(enc, x, [7] * 7 + [1])[0], enc(x), rtol=0, atol=1e-5)


def test_adaptive_span_learns_through_its_ramp_and_penalty():
    enc = build(n_layers=1, window=(8, 0), adaptive_span=True, span_penalty=1.0)
    with torch.no_grad():
        enc.blocks[0].attn.span.fill_(0.5)
    loss = enc(torch.randn(2, 20, D_MODEL)).square().mean() + enc.auxiliary_loss()
    loss.backward()
    assert enc.auxiliary_loss().item() == pytest.approx(0.5)
    assert enc.blocks[0].attn.span.grad.abs().min() > 0


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(dilation=[1, 2]), "dilation: 2 per-layer values given but n_layers is 3"),
        (dict(dilation=0), "dilation: expected positive integers"),
        (dict(downsample=[1, 2, 0]), "downsample: expected positive integers"),
        (dict(global_tokens=-1), "global_tokens: must be an integer >= 0"),
        (dict(sink_tokens=1.5), "sink_tokens: must be an integer >= 0"),
        (dict(adaptive_span="yes"), "adaptive_span: must be true or false"),
    ],
)
def test_bad_variant_fields_are_one_clear_error(fields, message):
    with pytest.raises(ConfigError, match=message):
        SWAConfig(n_layers=3, **fields)


def test_variant_configs_round_trip_through_a_dict():
    cfg = SWAConfig(n_layers=2, global_tokens=1, sink_tokens=2, dilation=[1, 2], downsample=[1, 2], adaptive_span=True)
    assert SWAConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.rates == [1, 2] and cfg.has_extras


@torch.no_grad()
def test_a_downsampled_stack_keeps_each_positions_detail_through_its_bypass():
    enc = build(n_layers=2, window=(3, 0), downsample=[1, 4])
    y = enc(torch.randn(1, 16, D_MODEL))
    groups = y.view(1, 4, 4, D_MODEL)
    assert (groups - groups[:, :, :1]).abs().amax(dim=(-1, -2)).min() > 1e-3  # no group is one repeated row
