"""Waveform augmentation and the TTS engines of the speech demo data: each augmentation does what it claims,
measured on the signal (levels, spectra, lengths), and every installed engine speaks."""

import random

import numpy as np
import pytest

from swa_stream.tasks.asr import augment as aug
from swa_stream.tasks.asr.engines import ENGINES, available

RATE = aug.SAMPLE_RATE


def tone(freqs, seconds=1.0, amp=0.1):
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * sum(np.sin(2 * np.pi * f * t) for f in freqs)).astype(np.float32)


def band_energy(x, lo, hi):
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return spectrum[(f >= lo) & (f < hi)].sum()


def test_speech_rms_ignores_pauses():
    x = np.concatenate([np.zeros(RATE), tone([440]), np.zeros(RATE)])
    assert aug.speech_rms(x) == pytest.approx(0.1 / np.sqrt(2), rel=0.02)


def test_8k_band_limit_removes_everything_above_4khz_and_keeps_speech_band():
    x = tone([500, 6000])
    y = aug.band_limit(x, "8k")
    assert band_energy(y, 4200, 8000) < 1e-4 * band_energy(x, 4200, 8000)
    assert band_energy(y, 400, 600) == pytest.approx(band_energy(x, 400, 600), rel=0.05)


def test_telephone_band_cuts_low_and_high():
    x = tone([100, 1000, 6000])
    y = aug.band_limit(x, "telephone")
    assert band_energy(y, 50, 150) < 0.02 * band_energy(x, 50, 150)
    assert band_energy(y, 5000, 7000) < 0.01 * band_energy(x, 5000, 7000)
    assert band_energy(y, 900, 1100) > 0.7 * band_energy(x, 900, 1100)


def test_speed_changes_duration_and_pitch_together():
    x = tone([1000])
    for seed in range(5):
        y = aug.speed(x, np.random.default_rng(seed))
        factor = len(x) / len(y)
        assert 0.87 <= factor <= 1.13
        peak = np.fft.rfftfreq(len(y), 1 / RATE)[np.argmax(np.abs(np.fft.rfft(y)))]
        assert peak == pytest.approx(1000 * factor, rel=0.01)


def test_reverb_keeps_length_and_level_and_smears_in_time():
    x = np.zeros(RATE, np.float32)
    x[1000:1160] = 0.5  # a 10 ms click
    y = aug.reverb(x, np.random.default_rng(0))
    assert len(y) == len(x)
    assert np.abs(y[1400:]).max() > 1e-3  # energy after the click: the room's tail


def test_augment_sets_the_level_and_never_clips_beyond_full_scale():
    x = tone([300, 900], seconds=0.8)
    levels = []
    for seed in range(40):
        y, done = aug.augment(x, np.random.default_rng(seed))
        assert np.abs(y).max() <= 0.99 + 1e-6
        assert -50 <= done["dbfs"] <= -12
        if np.abs(y).max() < 0.98:  # unless the peak limit pulled it down, the speech RMS is the drawn level
            assert 20 * np.log10(aug.speech_rms(y)) == pytest.approx(done["dbfs"], abs=0.5)
        levels.append(done["dbfs"])
    assert max(levels) - min(levels) > 25  # gain over at least +-12.5 dB around the middle: 38 dB of range


def test_half_the_utterances_start_at_the_word():
    x = tone([440], seconds=0.5)
    starts = []
    for seed in range(60):
        cfg = aug.AugmentConfig(p_speed=0, p_reverb=0, p_8k=0, p_telephone=0, p_noise=0, p_clip=0)
        y, _ = aug.augment(x, np.random.default_rng(seed), cfg)
        starts.append(len(y) == len(x))
    assert 0.3 < np.mean(starts) < 0.7


def test_noise_is_at_the_drawn_snr():
    x = tone([440], seconds=2.0)
    cfg = aug.AugmentConfig(p_speed=0, p_reverb=0, p_8k=0, p_telephone=0, p_no_margin=1.0, p_noise=1.0, p_clip=0)
    for seed in range(5):
        y, done = aug.augment(x, np.random.default_rng(seed), cfg)
        clean = x * (np.dot(y, x) / np.dot(x, x))  # the speech part of y
        snr = 10 * np.log10(np.sum(clean**2) / np.sum((y - clean) ** 2))
        assert snr == pytest.approx(done["snr"], abs=1.0)


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_installed_engine_speaks_every_voice(name):
    engine = available([name]).get(name)
    if engine is None:
        pytest.skip(f"{name} is not installed")
    voices = engine.voices()
    assert voices
    for voice in voices[:: max(1, len(voices) // 4)]:  # espeak-ng has hundreds: a spread of them
        audio, rate = engine.speak(voice, "seven two", random.Random(0))
        assert rate >= 8000 and 0.3 < len(audio) / rate < 5 and np.abs(audio).max() > 0.01


def test_trim_quiet_ends_cuts_what_is_under_the_depth_and_keeps_the_rest():
    frame = RATE // 100
    rng = np.random.default_rng(0)
    quiet = lambda k: (0.003 * rng.standard_normal(k * frame)).astype(np.float32)  # noqa: E731  about -36 dB
    word = tone([440.0], 0.2, amp=0.3)  # 20 frames, about 25 dB above the quiet parts
    audio = np.concatenate([quiet(7), word, quiet(5)])
    cut = aug.trim_quiet_ends(audio, 15.0)
    np.testing.assert_array_equal(cut, word)  # the quiet frames on both sides go, the word stays whole
    np.testing.assert_array_equal(aug.trim_quiet_ends(audio, 60.0), audio)  # a deeper cut keeps everything
    assert len(aug.trim_quiet_ends(np.zeros(5, np.float32), 20.0)) == 5  # shorter than a frame: unchanged
    assert len(aug.trim_quiet_ends(np.zeros(3 * frame, np.float32), 20.0)) == 3 * frame  # all equal: kept


def test_gate_quiet_frames_silences_every_quiet_frame_and_keeps_the_timing():
    frame = RATE // 100
    rng = np.random.default_rng(1)
    quiet = lambda k: (0.003 * rng.standard_normal(k * frame)).astype(np.float32)  # noqa: E731
    word = tone([440.0], 0.2, amp=0.3)
    audio = np.concatenate([quiet(4), word, quiet(6), word, quiet(3), np.full(7, 0.001, np.float32)])
    gated = aug.gate_quiet_frames(audio, 15.0)
    expected = np.concatenate([np.zeros(4 * frame), word, np.zeros(6 * frame), word, np.zeros(3 * frame + 7)])
    np.testing.assert_array_equal(gated, expected.astype(np.float32))
    np.testing.assert_array_equal(aug.gate_quiet_frames(audio, 60.0), audio)
    assert len(aug.gate_quiet_frames(np.zeros(5, np.float32), 20.0)) == 5
