"""Speech data: NeMo-style JSONL manifests or the LibriSpeech folder layout, in length-bucketed batches.

A source is either
  * a manifest file (.json / .jsonl), one JSON object per line with `audio_filepath`, `duration` (seconds)
    and `text`; a relative `audio_filepath` resolves against the manifest's folder; or
  * a LibriSpeech-layout folder: `<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` (lines `ID TEXT`)
    beside `ID.flac` (any folder depth works: every *.trans.txt under the folder is read); or
  * a folder of spoken digits named `{digit}_{speaker}_{index}.wav`, as the Free Spoken Digit Dataset
    keeps them (see fsdd.py); a folder with *.trans.txt files is read as LibriSpeech.
A manifest line may name its audio `audio` instead of `audio_filepath` (FSDD's own manifest.jsonl does).
Sources are relative to `root` when one is given. Audio is read with soundfile, downmixed to mono and
resampled to `sample_rate`. SpecAugment is not here: it masks features, so the task applies it in its
training step (see module.py). `perturb=True` adds a fresh waveform perturbation (speed, gain, noise; see
augment.perturb) to each training utterance every time it is read, seeded from `seed`, the utterance and
the read count, so a run repeats exactly. `trim_ends=P` first trims a read utterance's quiet ends with
probability P (augment.trim_quiet_ends, 12-30 dB under its loudest 10 ms), as tightly trimmed real clips
are: FSDD's quiet speakers lose their fricatives to the trimmer. `gate_quiet=P` silences, with probability
P, every 10 ms frame 12-30 dB under the loudest (augment.gate_quiet_frames): every word trimmed, in place.
`remake_strings=P` makes a manifest entry that lists its `clips` (the FSDD strings of `swa-stream demo-data
asr`) again at read time with probability P: each clip cut as an energy trimmer cuts it (trim_quiet_ends,
12-30 dB) with probability 1/2, the clips joined by fresh 0-0.6 s gaps, then augmented afresh as real voices
are (augment.REAL). So a word inside a string loses its quiet /s/ as the held-out speakers' clips did,
which `trim_ends` (the utterance's ends only) cannot do. The clips are read from `clips_root` (default: the
FSDD folder that demo-data used, fsdd.default_root()).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from swa_stream.config import in_range
from swa_stream.errors import SWAStreamError
from swa_stream.tasks.asr import augment
from swa_stream.tasks.asr.audio import read_audio
from swa_stream.tasks.asr.fsdd import default_root, join, read_clips
from swa_stream.tasks.asr.text import VOCABULARY, encode, normalize

MANIFEST_SUFFIXES = (".json", ".jsonl")


@dataclass
class Utterance:
    path: Path
    duration: float  # seconds
    text: str
    clips: tuple[str, ...] = ()  # the clip files a string was joined from, when its manifest says


def read_manifest(path: str | Path) -> list[Utterance]:
    path = Path(path)
    if not path.is_file():
        raise SWAStreamError(f"{path}: no such manifest")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            audio = entry["audio_filepath"] if "audio_filepath" in entry else entry["audio"]
            duration, text = float(entry["duration"]), str(entry["text"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise SWAStreamError(
                f"{path}: line {number}: expected a JSON object with audio_filepath, duration and text"
            ) from None
        audio_path = Path(audio)
        clips = entry.get("clips", [])
        if not isinstance(clips, list) or not all(isinstance(c, str) for c in clips):
            raise SWAStreamError(f"{path}: line {number}: clips must be a list of file names")
        out.append(Utterance(audio_path if audio_path.is_absolute() else path.parent / audio_path, duration, text,
                             tuple(clips)))
    return out


def read_librispeech(folder: str | Path) -> list[Utterance]:
    import soundfile as sf

    folder = Path(folder)
    transcripts = sorted(folder.rglob("*.trans.txt"))
    if not transcripts:
        raise SWAStreamError(f"{folder}: no *.trans.txt files (expected the LibriSpeech <spk>/<chapter>/ layout)")
    out = []
    for trans in transcripts:
        for number, line in enumerate(trans.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.is_file():
                raise SWAStreamError(f"{trans}: line {number}: {audio.name} is missing")
            try:
                duration = sf.info(str(audio)).duration
            except (sf.LibsndfileError, RuntimeError) as err:
                raise SWAStreamError(f"{audio}: cannot read audio ({' '.join(str(err).split())})") from None
            out.append(Utterance(audio, duration, text))
    return out


def read_digit_folder(folder: str | Path) -> list[Utterance]:
    """Every `{digit}_{speaker}_{index}.wav` under `folder` as an utterance whose text is the digit's word."""
    import soundfile as sf

    out = []
    for clip in read_clips(folder):
        try:
            duration = sf.info(str(clip.path)).duration
        except (sf.LibsndfileError, RuntimeError) as err:
            raise SWAStreamError(f"{clip.path}: cannot read audio ({' '.join(str(err).split())})") from None
        out.append(Utterance(clip.path, duration, clip.text))
    return out


def read_source(source: str | Path) -> list[Utterance]:
    """A manifest file, a LibriSpeech-layout folder or a folder of `{digit}_{speaker}_{index}.wav` clips."""
    source = Path(source)
    if source.is_dir():
        if next(source.rglob("*.trans.txt"), None) is None and next(source.rglob("*_*_*.wav"), None) is not None:
            return read_digit_folder(source)
        return read_librispeech(source)
    if source.suffix in MANIFEST_SUFFIXES or source.is_file():
        return read_manifest(source)
    raise SWAStreamError(f"{source}: no such manifest or folder")


class SpeechDataset(Dataset):
    """Items {"audio": (N,) float32, "targets": (L,) label ids, "text": normalised transcript}."""

    def __init__(
        self, utterances: list[Utterance], labels: list[str], sample_rate: int, perturb: bool = False, seed: int = 0,
        trim_ends: float = 0.0, gate_quiet: float = 0.0, remake_strings: float = 0.0,
        clips: dict[str, Path] | None = None,
    ):
        self.utterances, self.labels, self.sample_rate = utterances, labels, sample_rate
        self.perturb, self.seed, self.reads, self.trim_ends = perturb, seed, 0, trim_ends
        self.gate_quiet, self.remake_strings, self.clips = gate_quiet, remake_strings, clips or {}

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> dict:
        utt = self.utterances[i]
        if self.perturb or self.trim_ends or self.gate_quiet or self.remake_strings:
            self.reads += 1
            rng = np.random.default_rng([self.seed, i, self.reads])
            if utt.clips and self.remake_strings and rng.random() < self.remake_strings:
                samples = self._remake(utt, rng)
            else:
                samples = read_audio(utt.path, self.sample_rate).numpy()
            if self.trim_ends and rng.random() < self.trim_ends:
                samples = augment.trim_quiet_ends(samples, rng.uniform(*augment.TRIM_DEPTH_DB))
            if self.gate_quiet and rng.random() < self.gate_quiet:
                samples = augment.gate_quiet_frames(samples, rng.uniform(*augment.TRIM_DEPTH_DB))
            audio = torch.from_numpy(augment.perturb(samples, rng) if self.perturb else samples.copy())
        else:
            audio = read_audio(utt.path, self.sample_rate)
        return {
            "audio": audio,
            "targets": torch.tensor(encode(utt.text, self.labels), dtype=torch.long),
            "text": normalize(utt.text),
        }


    def _remake(self, utt: Utterance, rng: np.random.Generator) -> np.ndarray:
        """The string `utt` joined again from its clips: each trimmed with probability 1/2, fresh gaps, the
        real-voice augmentation (see the module docstring)."""
        parts = []
        for name in utt.clips:
            path = self.clips.get(name)
            if path is None:
                raise SWAStreamError(f"{utt.path}: its clip {name} is not in the clips folder (data.clips_root)")
            clip = read_audio(path, self.sample_rate).numpy()
            if rng.random() < 0.5:  # this draw, then the depth: the order phase 6 trained with
                clip = augment.trim_quiet_ends(clip, rng.uniform(*augment.TRIM_DEPTH_DB))
            parts.append(clip)
        gaps = [int(rng.uniform(0.0, 0.6) * self.sample_rate) for _ in parts[1:]]
        return augment.augment(join(parts, gaps), rng, augment.REAL)[0]


def collate(items: list[dict]) -> dict:
    """Zero-padded audio (B, N) with lengths (B,), padded targets (B, L) with target_lengths (B,), texts."""
    lengths = torch.tensor([len(it["audio"]) for it in items], dtype=torch.long)
    target_lengths = torch.tensor([len(it["targets"]) for it in items], dtype=torch.long)
    audio = torch.zeros(len(items), int(lengths.max()) if items else 0)
    targets = torch.zeros(len(items), max(1, int(target_lengths.max()) if items else 0), dtype=torch.long)
    for i, it in enumerate(items):
        audio[i, : len(it["audio"])] = it["audio"]
        targets[i, : len(it["targets"])] = it["targets"]
    return {"audio": audio, "lengths": lengths, "targets": targets, "target_lengths": target_lengths,
            "texts": [it["text"] for it in items]}


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar durations: sort by duration (with a little seeded jitter so batches differ between
    epochs), cut into batches of at most `batch_size` utterances and `max_batch_seconds` of padded audio
    (longest x count), then shuffle the batch order. With `num_replicas` > 1 each rank takes every
    num_replicas-th batch, and all ranks yield the same number of batches (set
    `trainer.use_distributed_sampler: false` so Lightning leaves this sampler alone)."""

    def __init__(
        self,
        durations: list[float],
        batch_size: int,
        max_batch_seconds: float | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise SWAStreamError(f"batch_size: must be >= 1, got {batch_size}")
        self.durations, self.batch_size, self.max_batch_seconds = list(durations), batch_size, max_batch_seconds
        self.shuffle, self.seed, self.num_replicas, self.rank, self.epoch = shuffle, seed, num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        jitter = (lambda: rng.uniform(0.95, 1.05)) if self.shuffle else (lambda: 1.0)
        order = sorted(range(len(self.durations)), key=lambda i: self.durations[i] * jitter())
        batches, current, longest = [], [], 0.0
        for i in order:
            longest_if = max(longest, self.durations[i])
            too_long = self.max_batch_seconds is not None and longest_if * (len(current) + 1) > self.max_batch_seconds
            if current and (len(current) == self.batch_size or too_long):
                batches.append(current)
                current, longest_if = [], self.durations[i]
            current.append(i)
            longest = longest_if
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _mine(self) -> list[list[int]]:
        batches = self._batches()
        if self.num_replicas == 1 or not batches:
            return batches
        per_rank = math.ceil(len(batches) / self.num_replicas)
        batches += batches[: per_rank * self.num_replicas - len(batches)]  # equal counts on every rank
        return batches[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())


class ASRDataModule(L.LightningDataModule):
    """Speech data from manifests or LibriSpeech folders (see the module docstring).

    `train`, `val`, `test`: one source or a list of sources each, relative to `root` if given.
    Batches hold at most `batch_size` utterances and `max_batch_seconds` seconds of padded audio.
    Training utterances longer than `max_duration` seconds are skipped. `labels` is the character
    vocabulary, which the CLI links into the task.
    """

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        root: str | None = None,
        sample_rate: int = 16000,
        batch_size: int = 32,
        max_batch_seconds: float | None = 200.0,
        max_duration: float | None = 20.0,
        num_workers: int = 0,
        seed: int = 0,
        perturb: bool = False,
        trim_ends: float = 0.0,
        gate_quiet: float = 0.0,
        remake_strings: float = 0.0,
        clips_root: str | None = None,
    ):
        super().__init__()
        in_range("sample_rate", sample_rate, 1, integer=True)
        in_range("batch_size", batch_size, 1, integer=True)
        in_range("max_batch_seconds", max_batch_seconds, 0.0, above=True, none_ok=True)
        in_range("max_duration", max_duration, 0.0, above=True, none_ok=True)
        in_range("num_workers", num_workers, 0, integer=True)
        in_range("trim_ends", trim_ends, 0.0, 1.0)
        in_range("gate_quiet", gate_quiet, 0.0, 1.0)
        in_range("remake_strings", remake_strings, 0.0, 1.0)
        if (perturb or trim_ends or gate_quiet or remake_strings) and sample_rate != augment.SAMPLE_RATE:
            field = next(n for n, v in (("perturb", perturb), ("trim_ends", trim_ends), ("gate_quiet", gate_quiet),
                                        ("remake_strings", remake_strings)) if v)
            raise SWAStreamError(f"data.{field}: needs {augment.SAMPLE_RATE} Hz audio, the data module reads "
                                 f"{sample_rate} Hz")
        self.root = Path(root) if root else None
        if self.root is not None and not self.root.is_dir():
            raise SWAStreamError(f"{self.root}: no such data folder")
        self.sources = {"train": train, "val": val, "test": test}
        self.sample_rate, self.batch_size, self.max_batch_seconds = sample_rate, batch_size, max_batch_seconds
        self.max_duration, self.num_workers, self.seed, self.perturb = max_duration, num_workers, seed, perturb
        self.trim_ends, self.gate_quiet, self.remake_strings = trim_ends, gate_quiet, remake_strings
        self.clips_root = Path(clips_root) if clips_root else None
        self.labels = list(VOCABULARY)
        self._splits: dict[str, list[Utterance]] = {}

    def _resolve(self, source: str) -> Path:
        path = Path(source)
        return path if self.root is None or path.is_absolute() else self.root / path

    def utterances(self, split: str) -> list[Utterance]:
        if split not in self._splits:
            sources = self.sources[split]
            if sources is None:
                raise SWAStreamError(f"data.{split}: no {split} source configured")
            sources = [sources] if isinstance(sources, str) else list(sources)
            utts = [u for s in sources for u in read_source(self._resolve(s))]
            if split == "train" and self.max_duration is not None:
                utts = [u for u in utts if u.duration <= self.max_duration]
            if not utts:
                raise SWAStreamError(f"data.{split}: {', '.join(map(str, sources))} holds no utterances")
            self._splits[split] = utts
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", ())
        for split in wanted:
            if self.sources[split] is not None:
                self.utterances(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        utts = self.utterances(split)
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = BucketBatchSampler(
            [u.duration for u in utts], self.batch_size, self.max_batch_seconds, shuffle, self.seed, replicas, rank
        )
        train = split == "train"  # read-time augmentation is for training only
        remake = self.remake_strings if train and any(u.clips for u in utts) else 0.0
        return DataLoader(
            SpeechDataset(utts, self.labels, self.sample_rate, perturb=self.perturb and train, seed=self.seed,
                          trim_ends=self.trim_ends if train else 0.0, gate_quiet=self.gate_quiet if train else 0.0,
                          remake_strings=remake, clips=self._clips() if remake else None),
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0 and shuffle,
        )

    def _clips(self) -> dict[str, Path]:
        """Clip file name -> path in the clips folder, for `remake_strings`."""
        root = self.clips_root or default_root()
        if root is None or not Path(root).is_dir():
            raise SWAStreamError(f"data.remake_strings: no clips folder ({root or 'FSDD not found'}); set "
                                 "data.clips_root")
        return {clip.path.name: clip.path for clip in read_clips(root)}

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.sources["val"] is None else self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
