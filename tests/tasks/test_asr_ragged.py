"""The speech model streams ragged batches: streams with their own lengths and chunkings join and leave one
batch (as a server runs them) and each gets exactly the log-probabilities of `forward` on it alone."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import SWAConfig
from swa_stream.errors import SWAStreamError
from swa_stream.tasks.asr.frontend import FrontendConfig
from swa_stream.tasks.asr.model import ASRModel, ASRState
from swa_stream.tasks.asr.text import VOCABULARY


def build(running_mean_s: float = 0.0, **encoder) -> ASRModel:
    torch.manual_seed(0)
    fields = dict(d_model=32, n_heads=2, n_layers=3, window=[(6, 0), (4, 2), (8, 1)], **encoder)
    frontend = FrontendConfig(d_model=32, conv_channels=8, running_mean_s=running_mean_s)
    m = ASRModel(frontend, SWAConfig(**fields), VOCABULARY).eval()
    m.frontend.norm.mean.fill_(-6.0)
    m.frontend.norm.std.fill_(3.0)
    return m


MODELS = {"plain": {}, "variants": dict(sink_tokens=2, global_tokens=1, downsample=[1, 2, 1]),
          "running-mean": dict(running_mean_s=0.3)}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return build(**MODELS[request.param])


@settings(deadline=None, max_examples=8)
@given(data=st.data())
def test_each_stream_of_a_ragged_batch_gets_its_own_log_probs(model, data, ragged, chunks):
    n = data.draw(st.integers(2, 3))
    xs = [torch.randn(data.draw(st.integers(1, 9000))) * 0.1 for _ in range(n)]
    chunkings = [chunks(data.draw, len(x), [2560, 0, 1, 160, 700, 4000]) for x in xs]
    joins = [data.draw(st.integers(0, 3)) for _ in range(n)]
    with torch.no_grad():
        outs = ragged(model, xs, chunkings, joins, init=lambda s: model.init_state(1))
        for x, out in zip(xs, outs, strict=True):
            offline, _ = model(x[None])
            assert out.shape == offline[0].shape
            torch.testing.assert_close(out, offline[0], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_the_server_calls_have_the_documented_shapes(model):
    state = ASRState.cat([model.init_state(1), model.init_state(1)])
    log_probs, frames, state = model.step(torch.randn(2, 9000) * 0.1, state, counts=torch.tensor([9000, 6000]))
    assert frames.dtype == torch.int64 and frames.tolist()[0] > frames.tolist()[1] > 0
    assert log_probs.shape == (2, frames.max().item(), len(VOCABULARY))
    assert log_probs[1, frames[1] :].abs().max() == 0
    joined = ASRState.cat([state, model.init_state(1)])  # a new stream emits nothing for its first 100 ms
    with pytest.raises(SWAStreamError, match="counts"):
        model.step(torch.randn(3, 1600), joined)
    tail, lengths = model.flush(state.select([1]), with_lengths=True)
    assert tail.shape[0] == 1 and lengths.shape == (1,)
    state = state.select(torch.tensor([True, False]))
    assert state.encoder.batch_size == 1 and model.flush(state).shape[0] == 1
