"""Ragged batches: streams at different positions of their own streams share one step, join and leave
between steps, and each gets exactly its own offline output."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import StreamState, SWAConfig, SWAEncoder
from swa_stream.errors import SWAStreamError

D_MODEL, HEADS = 16, 2

VARIANTS = {
    "plain": {},
    "lookahead": dict(window=[(5, 2), (3, 1)]),
    "sinks": dict(sink_tokens=3),
    "global": dict(global_tokens=2),
    "dilation": dict(dilation=[1, 3]),
    "downsample": dict(downsample=[2, 3]),
    "adaptive": dict(adaptive_span=True, window=(9, 1)),
    "all": dict(global_tokens=1, sink_tokens=2, dilation=2, downsample=[1, 2], adaptive_span=True),
}


def build(variant: str, seed: int = 0) -> SWAEncoder:
    torch.manual_seed(seed)
    fields = {"n_layers": 2, "window": (4, 1), **VARIANTS[variant]}
    enc = SWAEncoder(SWAConfig(d_model=D_MODEL, n_heads=HEADS, **fields)).eval()
    with torch.no_grad():  # learned spans inside the window, so that the trimmed cache matters
        for block in enc.blocks:
            if block.attn.span is not None:
                block.attn.span.uniform_(0, 1)
    return enc


def draw_streams(draw, chunks):
    """2-4 streams, each with its own length, chunking (zeros included), start offset and join step."""
    cases = []
    for _ in range(draw(st.integers(2, 4))):
        length = draw(st.integers(1, 40))
        sizes = chunks(draw, length, [1, 2, 3, 5, 8, 13, 30, 0])
        start = draw(st.sampled_from([0, 1, 7, 10**6 + 3, 10**9]))
        cases.append((length, sizes, start, draw(st.integers(0, 6))))
    return cases


@pytest.mark.parametrize("variant", VARIANTS)
@settings(deadline=None, max_examples=10)
@given(data=st.data())
@torch.no_grad()
def test_each_stream_of_a_ragged_batch_gets_its_own_offline_output(variant, data, ragged, chunks):
    enc = build(variant)
    cases = draw_streams(data.draw, chunks)
    xs = [torch.randn(length, D_MODEL) for length, *_ in cases]
    outs = ragged(enc, xs, [c[1] for c in cases], [c[3] for c in cases],
                  init=lambda s: enc.init_state(1, start_position=cases[s][2]))
    for x, out in zip(xs, outs, strict=True):
        torch.testing.assert_close(out, enc(x[None])[0], rtol=0, atol=1e-5)


@torch.no_grad()
def test_aligned_rows_keep_the_two_item_step_and_ragged_rows_ask_for_counts():
    enc = build("lookahead")  # lookahead 3
    state = enc.init_state(2, start_position=[0, 10**9])
    y, state = enc.step(torch.randn(2, 5, D_MODEL), state)  # the same count received: the same count emitted
    assert y.shape == (2, 2, D_MODEL)
    y, lengths, state = enc.step(torch.randn(2, 4, D_MODEL), state, counts=[4, 1])
    assert lengths.tolist() == [4, 1] and y.shape == (2, 4, D_MODEL)
    assert y[1, 1:].abs().max() == 0  # past a row's length: zeros
    y, state = enc.step(torch.randn(2, 2, D_MODEL), state)  # both past the lookahead: both emit 2
    assert y.shape == (2, 2, D_MODEL)
    state = StreamState.cat([state, enc.init_state(1)])  # a new stream emits nothing yet
    with pytest.raises(SWAStreamError, match="pass counts"):
        enc.step(torch.randn(3, 2, D_MODEL), state)
    with pytest.raises(SWAStreamError, match="with_lengths"):
        enc.flush(state)
    tail, lengths = enc.flush(state, with_lengths=True)
    assert lengths.tolist() == [3, 3, 0] and tail.shape == (3, 3, D_MODEL)


@torch.no_grad()
def test_select_and_cat_round_trip_rows():
    enc = build("all")
    state = enc.init_state(3, start_position=[5, 0, 9])
    _, _, state = enc.step(torch.randn(3, 9, D_MODEL), state, counts=[9, 2, 0])
    parts = [state.select([i]) for i in range(3)]
    joined = StreamState.cat([parts[2], parts[0], parts[1]])
    assert joined.received.tolist() == [0, 9, 2] and joined.start.tolist() == [9, 5, 0]
    back = joined.select(torch.tensor([False, True, True]))
    for a, b in zip(back.to_tensors().values(), StreamState.cat(parts[:2]).to_tensors().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@torch.no_grad()
def test_bad_counts_are_refused():
    enc = build("plain")
    state = enc.init_state(2)
    with pytest.raises(SWAStreamError, match="counts"):
        enc.step(torch.randn(2, 3, D_MODEL), state, counts=[4, 1])
    with pytest.raises(SWAStreamError, match="counts"):
        enc.step(torch.randn(2, 3, D_MODEL), state, counts=[1])


@pytest.mark.parametrize(
    ("other", "names"),
    [
        (dict(window=(6, 1)), "layer 0's k"),
        (dict(window=(4, 2)), "layer 0's k"),
        (dict(n_layers=3), "3 layers"),
        (dict(sink_tokens=2), "sink_k"),
        (dict(global_tokens=1), "global"),
        (dict(downsample=[1, 2]), "downsample"),
        (dict(d_model=32), "d_model"),
    ],
)
def test_a_state_made_for_another_config_is_refused_naming_the_difference(other, names):
    enc = build("plain")
    fields = {"d_model": D_MODEL, "n_heads": HEADS, "n_layers": 2, "window": (4, 1), **other}
    state = SWAEncoder(SWAConfig(**fields)).init_state(1)
    with pytest.raises(SWAStreamError, match=names):
        enc.step(torch.randn(1, 3, D_MODEL), state)
    with pytest.raises(SWAStreamError, match=names):
        enc.flush(state)


def test_state_bytes_are_derived_from_the_state_shapes():
    for variant in VARIANTS:
        enc = build(variant)
        live = enc.init_state(2).nbytes()
        bound = 2 * enc.state_bytes()
        bypass = 2 * enc.cfg.bypass_rows() * D_MODEL * 4  # a downsampled stack's bypass starts empty
        assert live == bound - bypass
