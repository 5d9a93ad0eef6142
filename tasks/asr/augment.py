"""Waveform augmentation for the speech demo data, so that a model trained on synthetic voices hears real ones.

Each step is a plain function of (audio at 16 kHz, numpy Generator); `augment` chains them with the
probabilities of `AugmentConfig`. What each one stands in for:
  speed      resampling by 0.88-1.12: tempo and pitch together (vocal tract length, speaking rate)
  reverb     a room impulse response: pyroomacoustics shoebox rooms when installed, else exponentially
             decaying noise (RT60 0.15-0.8 s) behind a direct path
  band       band-limiting to an 8 kHz recording (4 kHz wide, as FSDD is) or a telephone band (300-3400 Hz)
  lead/trail real clips start at the word: half the utterances get no lead-in or tail at all
  trim       (at read time, `trim_quiet_ends`) an energy trimmer's cut: the quiet ends of an utterance, a
             word's fricatives among them, removed, as in FSDD clips whose "six" starts at its vowel;
             `gate_quiet_frames` silences the quiet frames of every word, as strings of trimmed clips are
  noise      white, pink or brown noise at 0-30 dB SNR (mostly above 5 dB)
  clipping   driving the signal past full scale, as a close microphone does
  gain       the utterance's speech RMS set to -50 .. -12 dBFS (the quietest FSDD speaker is near -44)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000


@dataclass
class AugmentConfig:
    p_speed: float = 0.5
    p_reverb: float = 0.3
    p_8k: float = 0.35
    p_telephone: float = 0.1
    p_no_margin: float = 0.5
    p_noise: float = 0.8
    p_clip: float = 0.05
    dbfs: tuple[float, float] = (-50.0, -12.0)
    snr_db: tuple[float, float] = (0.0, 30.0)


REAL = AugmentConfig(p_speed=0.3, p_reverb=0.2, p_8k=0.0, p_telephone=0.05, p_no_margin=0.6, p_noise=0.5,
                     snr_db=(10.0, 30.0))  # recordings that are already real, narrow-band and trimmed


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return audio.astype(np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(rate_in), int(rate_out))
    return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)


def speech_rms(audio: np.ndarray) -> float:
    """RMS of the samples above 2% of the peak: the level of the speech, not of the pauses."""
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    voiced = audio[np.abs(audio) > 0.02 * peak] if peak > 0 else audio
    return float(np.sqrt(np.mean(voiced**2))) if len(voiced) else 0.0


def speed(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factor = rng.uniform(0.88, 1.12)  # > 1 is faster and higher
    return resample(audio, round(SAMPLE_RATE * factor), SAMPLE_RATE)


def room_impulse(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.15, 0.8)
    try:
        import pyroomacoustics as pra
    except ImportError:
        n = int(rt60 * SAMPLE_RATE)
        tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * rng.uniform(0.05, 0.3)
        tail[0] = 1.0
        return tail
    room_dim = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
    try:
        absorption, max_order = pra.inverse_sabine(rt60, room_dim)
    except ValueError:  # the room is too small for that RT60
        absorption, max_order = 0.5, 8
    room = pra.ShoeBox(room_dim, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(max_order, 12))
    room.add_source(rng.uniform(0.5, room_dim - 0.5))
    room.add_microphone(rng.uniform(0.5, room_dim - 0.5))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    return rir / (np.abs(rir).max() + 1e-12)


RIR_BANK = 48


@lru_cache(maxsize=1)
def _rir_bank() -> tuple[np.ndarray, ...]:
    """Room impulse responses drawn once per process from a fixed seed (a shoebox room takes ~0.2 s), so an
    utterance's reverb depends on its own seed only, never on which worker made it."""
    rng = np.random.default_rng(20260101)
    return tuple(room_impulse(rng) for _ in range(RIR_BANK))


def reverb(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    wet = fftconvolve(audio, _rir_bank()[int(rng.integers(RIR_BANK))])[: len(audio)]
    return (wet * (speech_rms(audio) / (speech_rms(wet) + 1e-12))).astype(np.float32)


def band_limit(audio: np.ndarray, kind: str) -> np.ndarray:
    if kind == "8k":
        return resample(resample(audio, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
    from scipy.signal import butter, sosfilt

    sos = butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, audio).astype(np.float32)


def noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white" or n < 2:
        return white
    spectrum = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    spectrum /= f ** (0.5 if colour == "pink" else 1.0)  # pink: 1/f power, brown: 1/f^2
    out = np.fft.irfft(spectrum, n)
    return out / (out.std() + 1e-12)


SYNTHETIC = AugmentConfig()  # the defaults: for TTS output


def add_noise(audio: np.ndarray, rng: np.random.Generator, colour: str, snr_db: float, level: float) -> np.ndarray:
    """audio plus `colour` noise `snr_db` below `level` (the speech RMS)."""
    return audio + noise(rng, len(audio), colour).astype(np.float32) * level / 10 ** (snr_db / 20)


def inside_full_scale(audio: np.ndarray, peak_limit: float = 0.99) -> np.ndarray:
    """audio scaled down, if its peak exceeds `peak_limit`, to that peak."""
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    return audio * (peak_limit / peak) if peak > peak_limit else audio


# How far under an utterance's loudest 10 ms an energy trimmer's threshold sits, drawn per read: 12-30 dB.
TRIM_DEPTH_DB = (12.0, 30.0)


def _loud_frames(audio: np.ndarray, depth_db: float, frame: int) -> np.ndarray | None:
    """(n,) bool: which whole frames have an RMS within `depth_db` of the loudest frame's; None if there is
    no whole frame."""
    n = len(audio) // frame
    if n == 0:
        return None
    rms = np.sqrt(np.mean(audio[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    return rms >= rms.max() * 10 ** (-depth_db / 20)


def trim_quiet_ends(audio: np.ndarray, depth_db: float, frame: int = SAMPLE_RATE // 100) -> np.ndarray:
    """Cut the leading and trailing 10 ms frames whose RMS is more than `depth_db` under the loudest
    frame's: what an energy-based trimmer does to a recording, taking a quiet /s/ or /f/ with the
    silence. The loudest frame always stays."""
    loud = _loud_frames(audio, depth_db, frame)
    if loud is None:
        return audio
    kept = np.flatnonzero(loud)
    first, last = int(kept[0]), int(kept[-1])
    return audio[first * frame : len(audio) if last == len(loud) - 1 else (last + 1) * frame]


def gate_quiet_frames(audio: np.ndarray, depth_db: float, frame: int = SAMPLE_RATE // 100) -> np.ndarray:
    """Silence every 10 ms frame whose RMS is more than `depth_db` under the loudest frame's (a noise gate):
    `trim_quiet_ends` for every word of a string at once, as in FSDD strings joined from trimmed clips, with
    the timing kept. The tail shorter than a frame follows the last whole frame."""
    loud = _loud_frames(audio, depth_db, frame)
    if loud is None:
        return audio
    keep = np.append(np.repeat(loud, frame), np.full(len(audio) - len(loud) * frame, loud[-1]))
    return np.where(keep, audio, 0).astype(audio.dtype)


def perturb(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A light, fresh perturbation each time an utterance is read for training, on top of the offline
    augmentation the manifest's audio already carries: half get a speed change of 0.92-1.08, every one a
    gain of +-6 dB (kept inside full scale), a third white or pink noise at 20-40 dB SNR. So the epochs of a
    long fine-tune do not see the same waveforms again."""
    audio = audio.astype(np.float32)
    if len(audio) < 2:
        return audio
    if rng.random() < 0.5:
        audio = resample(audio, round(SAMPLE_RATE * rng.uniform(0.92, 1.08)), SAMPLE_RATE)
    if rng.random() < 1 / 3:
        colour = "white" if rng.random() < 0.5 else "pink"
        audio = add_noise(audio, rng, colour, rng.uniform(20.0, 40.0), speech_rms(audio))
    return inside_full_scale(audio * np.float32(10 ** (rng.uniform(-6.0, 6.0) / 20))).astype(np.float32)


def augment(audio: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = SYNTHETIC) -> tuple[np.ndarray, dict]:
    """16 kHz float audio -> augmented audio at a random level, and a record of what was done."""
    audio = audio.astype(np.float32)
    done: dict = {}
    if rng.random() < cfg.p_speed:
        audio = speed(audio, rng)
        done["speed"] = True
    if rng.random() < cfg.p_reverb:
        audio = reverb(audio, rng)
        done["reverb"] = True
    band = rng.random()
    if band < cfg.p_8k:
        audio, done["band"] = band_limit(audio, "8k"), "8k"
    elif band < cfg.p_8k + cfg.p_telephone:
        audio, done["band"] = band_limit(audio, "telephone"), "telephone"
    level = speech_rms(audio) + 1e-9
    if rng.random() >= cfg.p_no_margin:
        lead, tail = (int(rng.uniform(0.0, 0.4) * SAMPLE_RATE) for _ in range(2))
        audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
    if rng.random() < cfg.p_noise:
        lo, hi = cfg.snr_db
        snr = rng.uniform(max(lo, 5.0), hi) if rng.random() < 0.85 else rng.uniform(lo, max(lo, 5.0))
        colour = ["white", "pink", "brown"][int(rng.integers(3))]
        audio = add_noise(audio, rng, colour, snr, level)
        done["snr"], done["noise"] = round(float(snr), 1), colour
    if rng.random() < cfg.p_clip:
        drive = rng.uniform(1.5, 4.0)
        audio = np.clip(audio * drive / (np.abs(audio).max() + 1e-9), -1.0, 1.0)
        done["clipped"] = True
    dbfs = rng.uniform(*cfg.dbfs)
    audio = audio * (10 ** (dbfs / 20) / (speech_rms(audio) + 1e-9))
    audio = inside_full_scale(audio)  # a loud target level on a peaky utterance
    done["dbfs"] = round(float(dbfs), 1)
    return audio.astype(np.float32), done
