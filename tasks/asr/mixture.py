"""The speech demo's training mixture: every installed TTS engine, augmented, plus real FSDD speakers.

Training utterances, by kind (fractions of --n-train):
  espeak     0.25  espeak-ng digit strings (1-8 words), the training (voice, variant) combinations
  engines    0.20  festival, flite and Piper digit strings, one engine after another
  bank       0.10  strings joined from single spoken digits with gaps of 0-0.5 s (as FSDD strings are made)
  fsdd       0.25  strings of 1-8 clips (mostly 3-5) of the four FSDD training speakers, gaps of 0-0.6 s
  fsdd1      0.05  single FSDD training clips
  filler     0.15  non-digit English from every engine, one garbage word `*` per spoken word; a third have
                   digits among the filler words, which keep their names
In TTS strings, a zero is spoken "oh" 30% of the time (its target stays "zero"). Every utterance is trimmed
to its speech and then augmented (augment.py); FSDD with the milder `REAL` settings.

Validation and test hold out speakers and voices: espeak-ng's val / test combinations (spoken exactly as in
synthetic.py's original recipe, so the espeak-ng WER stays comparable), and FSDD's theo and yweweler (see
fsdd.py). Each utterance has its own seed, so the output never depends on the number of workers.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swa_stream.tasks.asr import augment as aug
from swa_stream.tasks.asr.text import GARBAGE

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
KINDS = {"espeak": 0.25, "engines": 0.20, "bank": 0.10, "fsdd": 0.25, "fsdd1": 0.05, "filler": 0.15}
# Everyday words, none of which sounds like a digit ("won", "to", "for", "ate" and "oh" are left out).
FILLER_WORDS = (
    "the a and of in is it that was he she they we you this with on at by from but not what all were when "
    "there can an your which their said if do will each about how up out them then many some so these would "
    "other into has more her like him see time could no make than first been its who now people my made over "
    "did down only way find use may water long little very after words called just where most know get "
    "through back much before go good new write our used me man day too any same right look think also around "
    "another came come work three word must because does part even place well such here take why help put "
    "different away again off went old number great tell men say small every found still between name should "
    "home big give air line set own under read last never us left end along while might next sound below saw "
    "something thought both few those always show large often together asked house world going want school "
    "important until form food keep children feet land side without boy once animal life enough took sometimes "
    "hello please thanks call phone play stop weather music light open close yes okay hey computer morning"
).split()
FILLER_WORDS = tuple(w for w in FILLER_WORDS if w != "three")


@dataclass
class Job:
    kind: str
    out: str  # absolute wav path
    relpath: str
    seed: int
    engine: str = ""
    voice: str = ""
    clips: list = field(default_factory=list)  # fsdd: paths of the clips, in order


def _trim(audio: np.ndarray, rate: int, margin_s: float = 0.01) -> np.ndarray:
    """Cut leading and trailing samples under 3% of the peak (TTS engines pad with silence), keeping 10 ms."""
    loud = np.flatnonzero(np.abs(audio) > 0.03 * (np.abs(audio).max() + 1e-9))
    if len(loud) == 0:
        return audio
    m = int(margin_s * rate)
    return audio[max(0, loud[0] - m) : loud[-1] + m + 1]


def _say(job: Job, text: str, rng: random.Random) -> np.ndarray:
    from swa_stream.tasks.asr.engines import ENGINES

    audio, rate = ENGINES[job.engine]().speak(job.voice, text, rng)
    return _trim(aug.resample(np.asarray(audio, np.float32), rate, aug.SAMPLE_RATE), aug.SAMPLE_RATE)


def _digit_words(rng: random.Random, lo: int, hi: int) -> tuple[list[str], list[str]]:
    """(target words, spoken words): "oh" is spoken for 30% of the zeros of multi-digit strings."""
    words = [rng.choice(DIGITS) for _ in range(rng.randint(lo, hi))]
    spoken = [("oh" if w == "zero" and len(words) > 1 and rng.random() < 0.3 else w) for w in words]
    return words, spoken


def _filler_text(rng: random.Random) -> tuple[list[str], list[str]]:
    spoken = [rng.choice(FILLER_WORDS) for _ in range(rng.randint(1, 10))]
    target = [GARBAGE] * len(spoken)
    if rng.random() < 1 / 3:
        at = rng.randint(0, len(spoken))
        digits, said = _digit_words(rng, 1, 4)
        spoken[at:at], target[at:at] = said, digits
    return target, spoken


def make(job: Job) -> dict:
    """Make one training utterance, write its wav, return its manifest entry."""
    import soundfile as sf

    from swa_stream.tasks.asr.fsdd import join

    rng = random.Random(job.seed)
    nrng = np.random.default_rng(job.seed)
    cfg = aug.AugmentConfig()
    if job.kind in ("espeak", "engines"):
        target, spoken = _digit_words(rng, 1, 8)
        audio = _say(job, " ".join(spoken), rng)
    elif job.kind == "bank":
        target, spoken = _digit_words(rng, 1, 6)
        parts = [_say(job, w, rng) for w in spoken]
        audio = join(parts, [int(rng.uniform(0.0, 0.5) * aug.SAMPLE_RATE) for _ in parts[1:]])
    elif job.kind == "filler":
        target, spoken = _filler_text(rng)
        audio = _say(job, " ".join(spoken), rng)
    else:  # fsdd, fsdd1: real clips of the training speakers
        parts = [_read_16k(p) for p in job.clips]
        target = [DIGITS[int(Path(p).name.split("_")[0])] for p in job.clips]
        audio = join(parts, [int(rng.uniform(0.0, 0.6) * aug.SAMPLE_RATE) for _ in parts[1:]])
        cfg = aug.REAL
    audio, done = aug.augment(audio, nrng, cfg)
    sf.write(job.out, audio, aug.SAMPLE_RATE, subtype="PCM_16")
    return {"audio_filepath": job.relpath, "duration": round(len(audio) / aug.SAMPLE_RATE, 4),
            "text": " ".join(target), "kind": job.kind, "engine": job.engine or "fsdd", "voice": job.voice,
            **({"clips": [Path(c).name for c in job.clips]} if job.clips else {}), **done}


def _read_16k(path: str) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32")
    return aug.resample(audio.mean(axis=1) if audio.ndim > 1 else audio, rate, aug.SAMPLE_RATE)


def plan_train(n: int, seed: int, engines: dict, espeak_train: list[str], fsdd_train: list) -> list[Job]:
    """The training jobs (see the module docstring); kinds whose source is missing give their share to espeak."""
    rng = random.Random(f"{seed}-train-mix")
    others = [(name, v) for name, e in engines.items() if name != "espeak-ng" for v in e.voices()]
    by_engine: dict[str, list[str]] = {}
    for name, v in others:
        by_engine.setdefault(name, []).append(v)
    kinds = dict(KINDS)
    if not fsdd_train:
        kinds["espeak"] += kinds.pop("fsdd") + kinds.pop("fsdd1")
    if not by_engine:
        kinds["espeak"] += kinds.pop("engines")
    names, weights = list(kinds), list(kinds.values())
    jobs = []
    for i in range(n):
        kind = rng.choices(names, weights)[0]
        rel = f"wav/train/{i:06d}.wav"
        job = Job(kind, "", rel, rng.getrandbits(63))
        tts = [("espeak-ng", v) for v in [rng.choice(espeak_train)]]
        if by_engine:
            engine = rng.choice(sorted(by_engine))
            tts.append((engine, rng.choice(by_engine[engine])))
        if kind == "espeak":
            job.engine, job.voice = tts[0]
        elif kind == "engines":
            job.engine, job.voice = tts[1]
        elif kind in ("bank", "filler"):
            job.engine, job.voice = tts[rng.random() < 0.6 and len(tts) > 1]
        else:
            speaker = rng.choice(sorted({c.speaker for c in fsdd_train}))
            pool = [c for c in fsdd_train if c.speaker == speaker]
            count = 1 if kind == "fsdd1" else (rng.randint(3, 5) if rng.random() < 0.8 else rng.randint(1, 8))
            job.clips = [str(c.path) for c in rng.sample(pool, count)]
        jobs.append(job)
    return jobs


def write_train(out: Path, jobs: list[Job], pool, progress=None) -> dict[str, int]:
    (out / "wav" / "train").mkdir(parents=True, exist_ok=True)
    for job in jobs:
        job.out = str(out / job.relpath)
    counts: dict[str, int] = {}
    with open(out / "train.jsonl", "w") as manifest:
        for done, entry in enumerate(pool.map(make, jobs, chunksize=8), start=1):
            manifest.write(json.dumps(entry) + "\n")
            key = entry["engine"]
            counts[key] = counts.get(key, 0) + 1
            if progress is not None and (done % 200 == 0 or done == len(jobs)):
                progress("train", done, len(jobs))
    return counts
