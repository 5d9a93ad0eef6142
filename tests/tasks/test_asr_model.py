"""The speech model streams exactly, and so do the resampler and the CTC decoder: for any chunking,
cat(step outputs + flush) equals forward, and the decoded transcript (words, times, segments) is identical."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import SWAConfig
from swa_stream.errors import ConfigError
from swa_stream.tasks.asr.audio import Resampler, resample
from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig, greedy_decode
from swa_stream.tasks.asr.frontend import FrontendConfig
from swa_stream.tasks.asr.model import ASRModel
from swa_stream.tasks.asr.text import VOCABULARY, ctc_collapse, decode, encode, normalize

CHUNKS = st.lists(st.one_of(st.integers(0, 159), st.integers(160, 700), st.integers(701, 3000)), min_size=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ASRModel(
        FrontendConfig(d_model=32, conv_channels=8),
        SWAConfig(d_model=32, n_heads=2, n_layers=3, window=[(6, 0), (4, 2), (8, 1)]),
        VOCABULARY,
    ).eval()
    m.frontend.norm.mean.fill_(-6.0)
    m.frontend.norm.std.fill_(3.0)
    return m


def stream(module, x, sizes):
    """cat(step outputs + flush) for x (B, N) fed in chunks of `sizes` (cycled)."""
    sizes = sizes if any(sizes) else [*sizes, 1]
    state, outs, i, k = module.init_state(x.shape[0]), [], 0, 0
    while i < x.shape[1]:
        out, state = module.step(x[:, i : i + sizes[k % len(sizes)]], state)
        outs.append(out)
        i, k = i + sizes[k % len(sizes)], k + 1
    outs.append(module.flush(state))
    return torch.cat(outs, dim=1)


# ---- text -----------------------------------------------------------------------------------------
def test_vocabulary_is_blank_space_letters_apostrophe():
    assert VOCABULARY[:2] == ["<blank>", " "] and VOCABULARY[-2:] == ["'", "*"] and len(VOCABULARY) == 30


def test_normalize_and_round_trip():
    assert normalize("  Déjà-vu, IT’S 'three'  four!") == "deja vu it's three four"
    assert decode(encode("Three-Four")) == "three four"
    assert decode(ctc_collapse([0, 5, 5, 0, 5, 1, 1, 0, 6])) == "dd e"


# ---- model ----------------------------------------------------------------------------------------
@settings(deadline=None, max_examples=15)
@given(n=st.integers(0, 6000), sizes=CHUNKS, seed=st.integers(0, 10**6))
def test_streamed_log_probs_equal_forward(model, n, sizes, seed):
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(seed)) * 0.1
    with torch.no_grad():
        offline, lengths = model(x)
        streamed = stream(model, x, sizes)
    assert streamed.shape == offline.shape and lengths.item() == offline.shape[1]
    torch.testing.assert_close(streamed, offline, rtol=1e-4, atol=1e-4)


def test_batch_rows_equal_each_row_alone(model):
    x = torch.randn(3, 7000) * 0.1
    lengths = torch.tensor([7000, 4100, 1])
    with torch.no_grad():
        batch, out_lengths = model(x, lengths)
        for row in range(3):
            alone, n = model(x[row : row + 1, : lengths[row]])
            assert out_lengths[row] == n.item() == model.output_lengths(lengths[row : row + 1]).item()
            torch.testing.assert_close(batch[row, :n], alone[0], rtol=1e-4, atol=1e-4)


def test_end_padding_keeps_the_last_audio():
    """Without padding, the frontend drops an incomplete final window and 4-frame block; with it, the last
    real sample reaches an output frame, so a word at the very end of a stream is never lost."""
    m = ASRModel(FrontendConfig(d_model=16, conv_channels=4), SWAConfig(d_model=16, n_heads=2, n_layers=1),
                 VOCABULARY, end_silence_ms=0.0)
    assert m.end_padding == 400 + 4 * 160
    for n in (1, 399, 400, 1039, 1040, 5555):
        frames = m.output_lengths(torch.tensor([n])).item()
        newest_sample_seen = ((frames - 1) * 4 + 3) * 160 + 400 - 1  # of the last output frame
        assert newest_sample_seen >= n - 1


def test_mismatched_widths_are_a_config_error():
    with pytest.raises(ConfigError, match="frontend.d_model"):
        ASRModel(FrontendConfig(d_model=64), SWAConfig(d_model=32, n_heads=2, n_layers=1), VOCABULARY)


def test_config_round_trip(model):
    again = ASRModel.from_config(model.config())
    assert again.config() == model.config() and again.lookahead_frames == 3 and again.frame_rate == 25.0


# ---- resampler ------------------------------------------------------------------------------------
@settings(deadline=None, max_examples=25)
@given(rate=st.sampled_from([8000, 22050, 44100, 48000, 16000]), n=st.integers(0, 6000),
       sizes=st.lists(st.integers(0, 2000), min_size=1), seed=st.integers(0, 10**6))
def test_streamed_resampling_equals_torchaudio(rate, n, sizes, seed):
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(seed))
    streamed = stream(Resampler(rate, 16000), x, sizes)
    expected = resample(x, rate, 16000)
    assert streamed.shape == expected.shape
    torch.testing.assert_close(streamed, expected, rtol=1e-4, atol=1e-4)


# ---- decoder --------------------------------------------------------------------------------------
def spiky_log_probs(text: str, seed: int = 0, gap: int = 3, pause_at: int | None = None, pause: int = 40):
    """(T, V) frames that spell `text` with CTC spikes separated by blanks (and one long pause)."""
    rng = random.Random(seed)
    frames = []
    for i, c in enumerate(encode(text)):
        if i == pause_at:
            frames += [0] * pause
        frames += [c] * rng.randint(1, 2) + [0] * rng.randint(1, gap)  # a blank keeps doubled letters
    frames += [0] * 5
    lp = torch.full((len(frames), len(VOCABULARY)), -10.0)
    lp[torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    return lp


def decode_in_chunks(decoder, lp, sizes):
    state, finals, i, k = decoder.init_state(), [], 0, 0
    while i < lp.shape[0]:
        segs, state = decoder.step(lp[i : i + sizes[k % len(sizes)]], state)
        finals += segs
        i, k = i + sizes[k % len(sizes)], k + 1
    return finals + decoder.flush(state)


@settings(deadline=None, max_examples=30)
@given(sizes=st.lists(st.integers(1, 60), min_size=1), seed=st.integers(0, 1000))
def test_streaming_decode_is_identical_for_any_chunking(sizes, seed):
    lp = spiky_log_probs("one two three four five six", seed, pause_at=8)
    decoder = CTCDecoder(VOCABULARY, 25.0, EndpointConfig(silence_after_speech=1.2))
    whole = decode_in_chunks(decoder, lp, [lp.shape[0]])
    assert decode_in_chunks(decoder, lp, sizes) == whole
    assert [s.text for s in whole] == ["one two", "three four five six"]  # the 40-frame (1.6 s) pause ends one


def test_word_times_come_from_frames():
    lp = torch.full((10, len(VOCABULARY)), -10.0)
    # "a" at frame 1, "a" again at 3 (the blank between keeps the repeat), a space at 5, "b" at 7
    for f, c in enumerate([0, 2, 0, 2, 2, 1, 0, 3, 0, 0]):
        lp[f, c] = 0.0
    (seg,) = decode_in_chunks(CTCDecoder(VOCABULARY, 25.0), lp, [3])
    assert seg.text == "aa b"
    assert [(w.word, w.start, w.end) for w in seg.words] == [("aa", 0.04, 0.16), ("b", 0.28, 0.32)]
    assert (seg.start, seg.end) == (0.04, 0.32)


def test_partial_text_and_no_speech_rule():
    decoder = CTCDecoder(VOCABULARY, 25.0, EndpointConfig(silence_no_speech=0.4, silence_after_speech=None))
    silence = torch.full((30, len(VOCABULARY)), -10.0)
    silence[:, 0] = 0.0
    segs, state = decoder.step(silence, decoder.init_state())
    assert segs == [] and state.segment_start == 30  # restarted three times, after 10 frames each, emitting nothing
    segs, state = decoder.step(spiky_log_probs("hi")[:3], state)
    assert decoder.partial(state) == "h"


def test_greedy_batch_decode_matches_streaming():
    lp = spiky_log_probs("seven eight nine", 3)
    batch = torch.stack([lp, torch.roll(lp, 0, 0)])
    texts = greedy_decode(batch, torch.tensor([lp.shape[0], 10]), VOCABULARY)
    assert texts[0] == "seven eight nine" == decode_in_chunks(CTCDecoder(VOCABULARY, 25.0), lp, [7])[0].text
