"""The ASR frontend streams exactly: for any chunking, cat(step outputs + flush) equals forward."""

import math

import pytest
import torch
import torchaudio
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.tasks.asr.frontend import ConvSubsampling, FeatureNorm, Frontend, FrontendConfig, LogMel, RunningMean

# Chunk sizes below a hop (160), between a hop and a window (400) and above a window, plus empty chunks.
AUDIO_CHUNKS = st.lists(st.one_of(st.integers(0, 159), st.integers(160, 400), st.integers(401, 1200)), min_size=1)


def stream(module, x, sizes, batch_size):
    """Feed x (B, T, ...) in chunks of `sizes` (cycled) and return cat(step outputs + flush) along time."""
    sizes = sizes if any(sizes) else [*sizes, 1]  # empty chunks are valid, but must not stall the loop
    state, outs, i, k = module.init_state(batch_size), [], 0, 0
    while i < x.shape[1]:
        size = sizes[k % len(sizes)]
        out, state = module.step(x[:, i : i + size], state)
        outs.append(out)
        i, k = i + size, k + 1
    outs.append(module.flush(state))
    return torch.cat(outs, dim=1)


def assert_same(streamed, offline):
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def logmel():
    return LogMel()


@pytest.fixture(scope="module", params=[0.0, 0.3], ids=["fixed-norm", "running-mean"])
def frontend(request):
    torch.manual_seed(0)
    m = Frontend(FrontendConfig(d_model=16, conv_channels=8, running_mean_s=request.param)).eval()
    m.norm.mean.uniform_(-5, 5)
    m.norm.std.uniform_(0.5, 3)
    return m


# ---- LogMel -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, frames", [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2), (16000, 98)])
def test_logmel_emits_one_frame_per_complete_window(logmel, n, frames):
    assert logmel(torch.randn(1, n)).shape == (1, frames, 80)
    assert logmel.frame_lengths(torch.tensor([n])).item() == frames


@settings(deadline=None, max_examples=40)
@given(n=st.integers(0, 3000), batch=st.sampled_from([1, 2]), sizes=AUDIO_CHUNKS, seed=st.integers(0, 10**6))
def test_logmel_streamed_equals_offline(logmel, n, batch, sizes, seed):
    x = torch.randn(batch, n, generator=torch.Generator().manual_seed(seed))
    assert_same(stream(logmel, x, sizes, batch), logmel(x))


def test_logmel_streamed_one_sample_at_a_time_equals_offline(logmel):
    x = torch.randn(2, 1300)
    assert_same(stream(logmel, x, [1], 2), logmel(x))


def test_logmel_matches_an_independent_stft_and_peaks_at_440_hz(logmel):
    t = torch.arange(16000) / 16000
    x = 0.5 * torch.sin(2 * math.pi * 440 * t)[None]
    spec = torch.stft(x, 400, 160, window=torch.hann_window(400), center=False, return_complex=True).abs() ** 2
    fb = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, norm=None, mel_scale="htk")
    expected = torch.log(spec.transpose(1, 2) @ fb + 1e-6)
    got = logmel(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    bin_440 = 440 * 400 // 16000  # 40 Hz per STFT bin: 440 Hz is bin 11 exactly
    assert (got[0].argmax(-1) == fb[bin_440].argmax()).all()


def test_logmel_lengths_mask_padding_and_match_each_row_alone(logmel):
    x = torch.randn(2, 2000)
    feats, frames = logmel(x, torch.tensor([2000, 900]))
    assert frames.tolist() == [11, 4]
    torch.testing.assert_close(feats[1, :4], logmel(x[1:, :900])[0], rtol=1e-5, atol=1e-5)
    assert (feats[1, 4:] == 0).all()


# ---- ConvSubsampling ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conv():
    torch.manual_seed(1)
    return ConvSubsampling(n_mels=12, d_model=8, channels=4, subsampling=4).eval()


@settings(deadline=None, max_examples=50)
@given(
    t=st.integers(0, 45),
    batch=st.sampled_from([1, 2]),
    sizes=st.lists(st.integers(0, 12), min_size=1),
    seed=st.integers(0, 10**6),
)
def test_subsampling_streamed_equals_offline(conv, t, batch, sizes, seed):
    x = torch.randn(batch, t, 12, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        offline = conv(x)
        assert offline.shape == (batch, t // 4, 8)
        assert_same(stream(conv, x, sizes, batch), offline)


def test_subsampling_one_frame_at_a_time_equals_offline(conv):
    x = torch.randn(2, 37, 12)
    with torch.no_grad():
        assert_same(stream(conv, x, [1], 2), conv(x))


@pytest.mark.parametrize("changed", [0, 3, 4, 13, 22, 31])
def test_subsampling_output_j_sees_exactly_frames_up_to_4j_plus_3(conv, changed):
    x = torch.randn(1, 32, 12)
    x2 = x.clone()
    x2[0, changed] += 3.0
    with torch.no_grad():
        a, b = conv(x), conv(x2)
    first_affected = changed // 4  # the output whose 4-frame block holds the changed frame
    torch.testing.assert_close(a[:, :first_affected], b[:, :first_affected], rtol=0, atol=0)
    assert not torch.allclose(a[:, first_affected], b[:, first_affected])


# ---- FeatureNorm --------------------------------------------------------------------------------------
def test_feature_norm_uses_stored_statistics_not_the_utterances():
    norm = FeatureNorm(4)
    norm.mean.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    norm.std.copy_(torch.tensor([1.0, 2.0, 4.0, 8.0]))
    x = torch.randn(1, 50, 4)
    # Per-utterance normalisation would cancel the shift; fixed statistics pass it through, scaled.
    torch.testing.assert_close(norm(x + 8.0), norm(x) + 8.0 / norm.std)
    assert set(norm.state_dict()) == {"mean", "std"}


def test_feature_norm_estimate_ignores_padding_and_round_trips_through_state_dict():
    torch.manual_seed(2)
    a = torch.randn(3, 40, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0]) + torch.tensor([0.0, 10.0, -5.0, 1.0])
    lengths = torch.tensor([40, 25, 10])
    padded = a.clone()
    for i, n in enumerate(lengths):
        padded[i, n:] = 1e6  # padding must not leak into the statistics
    norm = FeatureNorm(4).estimate([(padded[:2], lengths[:2]), (padded[2:], lengths[2:])])
    valid = torch.cat([a[i, :n] for i, n in enumerate(lengths)])
    torch.testing.assert_close(norm.mean, valid.mean(0))
    torch.testing.assert_close(norm.std, valid.std(0, unbiased=False))
    fresh = FeatureNorm(4)
    fresh.load_state_dict(norm.state_dict())
    torch.testing.assert_close(fresh(valid[None]), norm(valid[None]))


# ---- RunningMean --------------------------------------------------------------------------------------
def test_running_mean_is_the_exponential_mean_of_the_frames_so_far():
    x = torch.randn(2, 50, 3, dtype=torch.float64)
    a = 0.1
    y = RunningMean(3, a)(x, torch.tensor([50, 20]))
    for b, n in ((0, 50), (1, 20)):
        for t in range(n):  # m_t = a * sum_s (1 - a)^(t - s) x_s: the recurrence's closed form, from m = 0
            weights = a * (1 - a) ** torch.arange(t, -1, -1, dtype=torch.float64)
            mean = (weights[:, None] * x[b, : t + 1]).sum(0)
            torch.testing.assert_close(y[b, t], x[b, t] - mean)
    torch.testing.assert_close(y[1, 20:], x[1, 20:] - mean)  # past a row's count the mean stands still


def test_running_mean_forgets_a_level_change_at_its_time_constant():
    """A gain multiplies the power spectrum, so it shifts every log-mel bin alike; the running mean takes
    the shift out of the output as exp(-t / time constant), which fixed statistics never do."""
    cfg = FrontendConfig(d_model=8, conv_channels=2, running_mean_s=0.5)
    fe = Frontend(cfg)
    x = torch.randn(1, 3 * 16000, generator=torch.Generator().manual_seed(0))
    quiet = fe.normalise(fe.logmel(x * 10 ** (-30 / 20)))
    loud = fe.normalise(fe.logmel(x))
    gap = (loud - quiet).mean(-1)[0].tolist()  # 30 dB is 6.9 in natural-log power: the gap starts near 6.9 x (1 - a)
    assert gap[0] > 6.0
    kept = 1 - 1 / 50  # a = 1 / (0.5 s x 100 frames per second): after 0.5 s, (1 - a)^50, about 1/e, is left
    assert gap[50] == pytest.approx(gap[0] * kept**50, rel=0.02)
    assert gap[-1] == pytest.approx(gap[0] * kept ** (len(gap) - 1), rel=0.02) and gap[-1] < 0.02


# ---- Frontend -----------------------------------------------------------------------------------------
@settings(deadline=None, max_examples=25)
@given(n=st.integers(0, 5000), batch=st.sampled_from([1, 2]), sizes=AUDIO_CHUNKS, seed=st.integers(0, 10**6))
def test_frontend_streamed_equals_offline(frontend, n, batch, sizes, seed):
    x = torch.randn(batch, n, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        offline = frontend(x)
        assert offline.shape[1] == frontend.output_lengths(torch.tensor([n])).item()
        assert_same(stream(frontend, x, sizes, batch), offline)


def test_frontend_state_never_grows(frontend):
    state = frontend.init_state(2)
    shapes = {k: t.shape for k, t in state.tensors().items()}
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for size in torch.randint(0, 700, (150,), generator=gen).tolist():
            _, state = frontend.step(torch.randn(2, size, generator=gen), state)
            assert {k: t.shape for k, t in state.tensors().items()} == shapes
    assert state.nbytes() == frontend.init_state(2).nbytes()


def test_frontend_step_leaves_the_given_state_unchanged(frontend):
    state = frontend.init_state(1)
    _, state = frontend.step(torch.randn(1, 1000), state)
    before = {k: t.clone() for k, t in state.tensors().items()}
    counts = (state.logmel.count.tolist(), [c.tolist() for c in state.conv.counts])
    frontend.step(torch.randn(1, 777), state)
    assert all(torch.equal(before[k], t) for k, t in state.tensors().items())
    assert counts == (state.logmel.count.tolist(), [c.tolist() for c in state.conv.counts])


def test_frontend_padded_batch_equals_each_row_alone(frontend):
    x = torch.randn(2, 6000)
    with torch.no_grad():
        y, lengths = frontend(x, torch.tensor([6000, 3000]))
        assert lengths.tolist() == [9, 4]
        torch.testing.assert_close(y[1, :4], frontend(x[1:, :3000])[0], rtol=1e-5, atol=1e-5)
        assert (y[1, 4:] == 0).all()


def test_frames_per_second():
    assert FrontendConfig().frames_per_second == 25.0
    assert Frontend(FrontendConfig(d_model=8, conv_channels=2)).frames_per_second == 25.0
    assert FrontendConfig(hop_ms=20, win_ms=40, subsampling=2).frames_per_second == 25.0


@pytest.mark.parametrize(
    "field, value",
    [
        ("sample_rate", 0),
        ("n_mels", -1),
        ("win_ms", 0),
        ("win_ms", 25.01),
        ("hop_ms", 30.0),
        ("hop_ms", "10"),
        ("subsampling", 3),
        ("subsampling", 1),
        ("d_model", 0),
        ("conv_channels", 2.5),
        ("running_mean_s", -1.0),
        ("running_mean_s", "2"),
        ("running_mean_s", float("nan")),
    ],
)
def test_bad_config_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        FrontendConfig(**{field: value})


@settings(deadline=None, max_examples=10)
@given(data=st.data())
def test_frontend_streams_a_ragged_batch_each_row_as_if_alone(frontend, data, ragged, chunks):
    """Streams with their own lengths and chunkings (zeros included) join and leave one batch."""
    n = data.draw(st.integers(2, 3))
    xs = [torch.randn(data.draw(st.integers(300, 4000))) for _ in range(n)]
    chunkings = [chunks(data.draw, len(x), [160, 0, 1, 399, 400, 1100]) for x in xs]
    joins = [data.draw(st.integers(0, 4)) for _ in range(n)]
    with torch.no_grad():
        outs = ragged(frontend, xs, chunkings, joins, init=lambda s: frontend.init_state(1))
        for x, out in zip(xs, outs, strict=True):
            assert_same(out, frontend(x[None])[0])
