"""Synthetic speech for the ASR demo: espeak-ng reading English digit sequences, with noise.

Each utterance is 1-8 words from "zero" .. "nine", spoken by one espeak-ng English voice (en-us, en-gb,
en-gb-scotland, en-029, ...: every `gmw/` voice that `espeak-ng --voices=en` lists) with one voice variant
(+f1 .. +f5, +m1 .. +m8, +klatt .. +klatt6, named variants; variants that sound the same as another, e.g.
names that espeak-ng does not resolve, are dropped by a probe, and whispers are left out), at 110-220 words
per minute, pitch 20-80, word gaps of 0-50 ms, sometimes a comma pause; then it gets 50-500 ms of lead-in
and tail, resampling to 16 kHz, and white, pink or brown noise at 10-30 dB SNR.

Splits are by (voice, variant) combination: val and test combinations never occur in train, so the test
WER measures voices the model never heard. Every utterance is drawn from its own seeded generator, so the
output does not depend on the number of worker processes.

Layout written under OUT:  wav/{train,val,test}/NNNNNN.wav, {train,val,test}.jsonl (NeMo manifests with
relative paths, plus the voice, variant, speed, pitch and snr of each line) and voices.json (the split of
the combinations).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swa_stream.errors import SWAStreamError

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SAMPLE_RATE = 16000
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.15}  # of the (voice, variant) combinations; train gets the rest
LEFT_OUT_VARIANTS = {"whisper", "whisperf"}  # unvoiced speech under 10 dB noise is not a digit-demo task
PROBE_TEXT = "seven two nine"


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SWAStreamError("espeak-ng: not found; install it (e.g. apt-get install espeak-ng) to make speech data")
    return exe


def _listing(kind: str) -> list[list[str]]:
    out = subprocess.run([_espeak(), f"--voices={kind}"], capture_output=True, text=True, check=True).stdout
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def english_voices() -> list[str]:
    """Language codes of espeak-ng's own English voices (mbrola voices need extra packages)."""
    return sorted({row[1] for row in _listing("en") if len(row) >= 5 and row[4].startswith("gmw/")})


def _speak(voice: str, text: str, speed: int = 175, pitch: int = 50, gap: int = 0) -> tuple[np.ndarray, int]:
    cmd = [_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap), "--stdout", text]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise SWAStreamError(f"espeak-ng -v {voice}: failed ({result.stderr.decode(errors='replace').strip()})")
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return samples, rate


def distinct_variants() -> list[str]:
    """Variant names that change the voice, each once: a probe sentence per variant, duplicates dropped."""
    names = sorted({row[4].removeprefix("!v/") for row in _listing("variant") if len(row) >= 5})
    names = [n for n in names if n not in LEFT_OUT_VARIANTS]
    seen, kept = {hashlib.sha1(_speak("en-us", PROBE_TEXT)[0].tobytes()).digest()}, [""]
    for name in names:
        digest = hashlib.sha1(_speak(f"en-us+{name}", PROBE_TEXT)[0].tobytes()).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(name)
    return kept


def split_combinations(voices: list[str], variants: list[str], seed: int) -> dict[str, list[tuple[str, str]]]:
    combos = [(v, x) for v in voices for x in variants]
    random.Random(seed).shuffle(combos)
    n_val = max(1, round(SPLIT_FRACTIONS["val"] * len(combos)))
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * len(combos)))
    return {"val": sorted(combos[:n_val]), "test": sorted(combos[n_val : n_val + n_test]),
            "train": sorted(combos[n_val + n_test :])}


@dataclass
class Job:
    out: str  # absolute wav path
    relpath: str
    seed: int
    voice: str
    variant: str


def _noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    from swa_stream.tasks.asr.augment import noise

    return noise(rng, n, colour)


_RESAMPLERS: dict = {}


def _to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples
    import torch
    import torchaudio

    if rate not in _RESAMPLERS:
        _RESAMPLERS[rate] = torchaudio.transforms.Resample(rate, SAMPLE_RATE)
    return _RESAMPLERS[rate](torch.from_numpy(np.ascontiguousarray(samples))).numpy()


def synthesize(job: Job) -> dict:
    """Make one utterance; write its wav; return its manifest entry."""
    import soundfile as sf

    rng = random.Random(job.seed)
    words = [rng.choice(DIGITS) for _ in range(rng.randint(1, 8))]
    spoken = "".join(w + (", " if rng.random() < 0.15 else " ") for w in words).strip(" ,")
    speed, pitch, gap = rng.randint(110, 220), rng.randint(20, 80), rng.randint(0, 5)
    voice = job.voice + (f"+{job.variant}" if job.variant else "")
    speech, rate = _speak(voice, spoken, speed, pitch, gap)
    speech = _to_16k(speech, rate)
    nrng = np.random.default_rng(job.seed)
    lead, tail = (int(rng.uniform(0.05, 0.5) * SAMPLE_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    voiced = speech[np.abs(speech) > 0.02 * (np.abs(speech).max() + 1e-9)]
    power = float(np.mean(voiced**2)) if len(voiced) else 1e-6
    snr = rng.uniform(10.0, 30.0)
    colour = rng.choice(["white", "pink", "brown"])
    audio = audio + _noise(nrng, len(audio), colour) * np.sqrt(power / 10 ** (snr / 10))
    audio *= rng.uniform(0.1, 0.9) / (np.abs(audio).max() + 1e-9)
    sf.write(job.out, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return {"audio_filepath": job.relpath, "duration": round(len(audio) / SAMPLE_RATE, 4), "text": " ".join(words),
            "voice": job.voice, "variant": job.variant, "speed": speed, "pitch": pitch, "snr": round(snr, 1),
            "noise": colour}


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def write_dataset(out: str | Path, counts: dict[str, int], seed: int = 0, jobs: int | None = None,
                  progress=None, fsdd: str | Path | None = None) -> dict:
    """Write the demo's data under `out`: `counts["train"]` utterances of the training mixture (mixture.py:
    every installed engine, augmented, and FSDD's training speakers when FSDD is found), `counts["val"]` and
    `counts["test"]` espeak-ng utterances of held-out voices (this module's original recipe), and FSDD's
    held-out speakers as fsdd_{val,test}_{strings,singles}.jsonl. Returns the voice split and a report
    (engines used, FSDD counts) that `describe` prints; engines.json keeps the report."""
    from swa_stream.tasks.asr import fsdd as fsdd_data
    from swa_stream.tasks.asr import mixture
    from swa_stream.tasks.asr.engines import available

    out = Path(out)
    engines = available()
    if "espeak-ng" not in engines:
        _espeak()  # raises the install hint: espeak-ng is the one engine the demo cannot do without
    voices, variants = english_voices(), distinct_variants()
    if not voices:
        raise SWAStreamError("espeak-ng: lists no English voices")
    splits = split_combinations(voices, variants, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "voices.json").write_text(json.dumps({k: [list(c) for c in v] for k, v in splits.items()}, indent=1))
    root = Path(fsdd) if fsdd else fsdd_data.default_root()
    clips = fsdd_data.split_clips(fsdd_data.read_clips(root)) if root else {"train": [], "val": [], "test": []}
    espeak_train = [v + (f"+{x}" if x else "") for v, x in splits["train"]]
    train_jobs = mixture.plan_train(counts.get("train", 0), seed, engines, espeak_train, clips["train"])
    report: dict = {"engines": {}, "fsdd": str(root) if root else None}
    workers = jobs or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        for split, n in counts.items():
            if split == "train":
                report["engines"] = mixture.write_train(out, train_jobs, pool, progress)
                continue
            (out / "wav" / split).mkdir(parents=True, exist_ok=True)
            rng = random.Random(f"{seed}-{split}")
            batch = []
            for i in range(n):
                voice, variant = rng.choice(splits[split])
                rel = f"wav/{split}/{i:06d}.wav"
                batch.append(Job(str(out / rel), rel, rng.getrandbits(63), voice, variant))
            with open(out / f"{split}.jsonl", "w") as manifest:
                for done, entry in enumerate(pool.map(synthesize, batch, chunksize=8), start=1):
                    manifest.write(json.dumps(entry) + "\n")
                    if progress is not None and (done % 200 == 0 or done == n):
                        progress(split, done, n)
            if root and split in ("val", "test"):
                n_strings = min(FSDD_STRINGS[split], n)
                report[f"fsdd_{split}"] = fsdd_data.write_held_out(out, clips[split], split, n_strings, seed)
    report["installed"] = sorted(engines)
    (out / "engines.json").write_text(json.dumps(report, indent=1))
    return {**splits, "report": report}


FSDD_STRINGS = {"val": 200, "test": 300}  # connected strings of the held-out speakers (at most n_val / n_test)


def describe(splits: dict) -> str:
    report = splits.get("report", {})
    combos = {k: v for k, v in splits.items() if k in ("train", "val", "test")}
    voices = sorted({v for c in combos.values() for v, _ in c})
    variants = sorted({x for c in combos.values() for _, x in c})
    sizes = ", ".join(f"{k} {len(v)}" for k, v in combos.items())
    used = ", ".join(f"{name} {n}" for name, n in sorted(report.get("engines", {}).items())) or "none"
    fsdd = report.get("fsdd") or "not found (set SWA_STREAM_FSDD)"
    return (f"engines installed: {', '.join(report.get('installed', [])) or 'espeak-ng'}; training utterances by "
            f"engine: {used}; FSDD: {fsdd}; espeak-ng {len(voices)} voices x {len(variants)} variants, "
            f"combinations per split: {sizes}")


def main_progress(split: str, done: int, total: int) -> None:
    print(f"\r{split}: {done}/{total} utterances", end="\n" if done == total else "", file=sys.stderr, flush=True)



EXAMPLE_PHRASES = ("four one five nine", "two zero six")
EXAMPLE_VOICE = "en-us+f4"  # a (voice, variant) combination of the test split, never heard in training


def write_example(path: str | Path, phrases: tuple[str, ...] = EXAMPLE_PHRASES, voice: str = EXAMPLE_VOICE,
                  speed: int = 160, pause: float = 1.6) -> Path:
    """The example that `make demo` transcribes: `phrases` spoken by `voice`, `pause` s of silence between and
    after them (longer than the default 1.2 s endpoint, so each phrase becomes its own final segment), at
    16 kHz in 4-bit IMA ADPCM WAV to keep the packaged file small."""
    import soundfile as sf

    silence = np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)
    parts = [np.zeros(int(0.2 * SAMPLE_RATE), dtype=np.float32)]
    for phrase in phrases:
        speech, rate = _speak(voice, phrase, speed)
        parts += [_to_16k(speech.astype(np.float32), rate), silence]
    audio = np.concatenate(parts)
    audio *= 0.7 / (np.abs(audio).max() + 1e-9)
    path = Path(path)
    sf.write(path, audio, SAMPLE_RATE, subtype="IMA_ADPCM")
    return path
