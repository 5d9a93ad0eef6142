"""Genomic classification data: FASTA + labels TSV, or the Genomic Benchmarks folder layout.

FASTA layout (what `swa-stream demo-data dna` writes):

    ROOT/train.fa  ROOT/train.labels.tsv  [ROOT/train.bed]      likewise val and test
    (.fa, .fasta, .fna, optionally gzipped; TSV rows `id<TAB>label`, a header line `id<TAB>label` allowed;
     BED intervals `id<TAB>start<TAB>end` mark the positions that the per-position track should call 1)

A split with a BED file and no labels TSV is track-only: its records carry no class, and the task
learns and scores the per-position track alone (e.g. `python -m swa_stream.tasks.dna.genes`).

Table layout, as benchmark data circulate: ROOT/train.csv (or .tsv, optionally compressed), likewise val
and test, one record per row with a sequence column (`seq`, `sequence`, ... or the first column of
sequences) and a class column (`label_column`, default `label`); a header row is detected.

Genomic Benchmarks layout: ROOT/train/<class>/*.txt and ROOT/test/<class>/*.txt, one sequence per file.
It has no validation split, so `val_fraction` of train (a fixed, seeded choice) becomes one.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from swa_stream.config import in_range
from swa_stream.errors import ConfigError, SWAStreamError
from swa_stream.tasks.dna.tokenizer import INVALID, encode, read_fasta, reverse_complement

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz")
SPLITS = ("train", "val", "test")


@dataclass
class Example:
    tokens: np.ndarray  # uint8 (T,)
    label: int
    track: np.ndarray | None  # uint8 (T,) 0/1, or None when the data has no per-position truth


def _read_labels(path: Path) -> dict[str, str]:
    labels = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#") or (number == 1 and line.lower().startswith("id\t")):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise SWAStreamError(f"{path}: line {number}: expected id<TAB>label")
        labels[parts[0]] = parts[1].strip()
    return labels


def _read_bed(path: Path) -> dict[str, list[tuple[int, int]]]:
    intervals: dict[str, list[tuple[int, int]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        parts = line.split("\t")
        try:
            intervals.setdefault(parts[0], []).append((int(parts[1]), int(parts[2])))
        except (IndexError, ValueError):
            raise SWAStreamError(f"{path}: line {number}: expected chrom<TAB>start<TAB>end") from None
    return intervals


TABLE_SUFFIXES = tuple(f"{s}{z}" for s in (".csv", ".tsv") for z in ("", ".gz", ".bz2", ".xz"))


def _find_table(root: Path, split: str) -> Path | None:
    return next((root / f"{split}{s}" for s in TABLE_SUFFIXES if (root / f"{split}{s}").is_file()), None)


def load_table_split(root: Path, split: str, label_column: str = "label"):
    """(labels, tokens, tracks) of one split in the table layout: the class is the row's `label_column`."""
    from swa_stream.tasks.dna.formats import read_sequences

    path = _find_table(root, split)
    if path is None:
        raise SWAStreamError(f"{root}: missing {split}.csv or {split}.tsv")
    pattern = re.compile(rf"(?:^|\s){re.escape(label_column)}=(\S+)")
    names, tokens = [], []
    for rec in read_sequences(path, formats=("table",), notice=lambda _: None):
        found = pattern.search(rec.description)
        if found is None:
            raise SWAStreamError(f"{path}: row {rec.index + 1}: no {label_column!r} column (set label_column)")
        names.append(found[1])
        tokens.append(rec.tokens)
    return names, tokens, [None] * len(tokens)


def _find_fasta(root: Path, split: str) -> Path | None:
    return next((root / f"{split}{s}" for s in FASTA_SUFFIXES if (root / f"{split}{s}").is_file()), None)


def is_track_only(root: Path) -> bool:
    """A FASTA-layout folder whose training split has per-position truth (BED) and no record classes."""
    return not (root / "train.labels.tsv").is_file() and (root / "train.bed").is_file()


def load_fasta_split(root: Path, split: str) -> tuple[list[str], list[np.ndarray], list[np.ndarray | None]]:
    """(labels, tokens, tracks) of one split in the FASTA layout; labels are "" in a track-only folder."""
    fasta = _find_fasta(root, split)
    labels_path = root / f"{split}.labels.tsv"
    track_only = is_track_only(root)
    if fasta is None or not (labels_path.is_file() or track_only):
        raise SWAStreamError(f"{root}: missing {split}.fa or {split}.labels.tsv")
    if track_only and not (root / f"{split}.bed").is_file():
        raise SWAStreamError(f"{root}: track-only data (no labels TSV) needs {split}.bed beside {split}.fa")
    labels = {} if track_only else _read_labels(labels_path)
    bed = _read_bed(root / f"{split}.bed") if (root / f"{split}.bed").is_file() else None
    names, tokens, tracks = [], [], []
    for rec in read_fasta(fasta):
        if not track_only and rec.id not in labels:
            raise SWAStreamError(f"{labels_path}: no label for record {rec.id!r} of {fasta}")
        names.append(labels.get(rec.id, ""))
        tokens.append(rec.tokens)
        track = None
        if bed is not None:
            track = np.zeros(rec.length, dtype=np.uint8)
            for start, end in bed.get(rec.id, []):
                track[start:end] = 1
        tracks.append(track)
    return names, tokens, tracks


def load_genomic_benchmarks_split(root: Path, split: str) -> tuple[list[str], list[np.ndarray], list[None]]:
    folder = root / split
    if not folder.is_dir():
        raise SWAStreamError(f"{root}: missing the {split}/ folder of the Genomic Benchmarks layout")
    names, tokens = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(class_dir.glob("*.txt")):
            seq = "".join(path.read_text().split())
            ids = encode(seq)
            if (ids == INVALID).any():
                bad = seq[int(np.flatnonzero(ids == INVALID)[0])]
                raise SWAStreamError(f"{path}: {bad!r} is not a nucleotide")
            names.append(class_dir.name)
            tokens.append(ids)
    return names, tokens, [None] * len(tokens)


class SequenceDataset(Dataset):
    """Examples, each cropped at random to `max_length` when longer, and with `reverse_complement`,
    flipped to the other strand half of the time (its track reversed with it): for strand-symmetric
    truth such as "inside a gene on either strand"."""

    def __init__(self, examples: list[Example], max_length: int | None = None, seed: int = 0,
                 reverse_complement: bool = False):
        self.examples, self.max_length, self.rng = examples, max_length, random.Random(seed)
        self.reverse_complement = reverse_complement

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        ex = self.examples[i]
        if self.max_length is not None and len(ex.tokens) > self.max_length:
            start = self.rng.randrange(len(ex.tokens) - self.max_length + 1)  # a random crop of long records
            stop = start + self.max_length
            ex = Example(ex.tokens[start:stop], ex.label, None if ex.track is None else ex.track[start:stop])
        if self.reverse_complement and self.rng.random() < 0.5:
            ex = Example(reverse_complement(ex.tokens), ex.label, None if ex.track is None else ex.track[::-1].copy())
        return ex


def collate(batch: list[Example]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(ex.tokens) for ex in batch])
    width = int(lengths.max()) if len(batch) else 0
    tokens = torch.full((len(batch), width), 4, dtype=torch.long)
    track = torch.zeros((len(batch), width))
    has_track = torch.tensor([ex.track is not None for ex in batch])
    for i, ex in enumerate(batch):
        tokens[i, : len(ex.tokens)] = torch.from_numpy(ex.tokens.astype(np.int64))
        if ex.track is not None:
            track[i, : len(ex.track)] = torch.from_numpy(ex.track.astype(np.float32))
    return {
        "tokens": tokens,
        "lengths": lengths,
        "labels": torch.tensor([ex.label for ex in batch]),
        "track": track,
        "has_track": has_track,
    }


class DNADataModule(L.LightningDataModule):
    """Reads ROOT in the FASTA layout or the Genomic Benchmarks layout (detected from the folder).

    `labels` (the class names, in order) comes from ROOT/classes.txt if present, else the sorted labels
    of the training split; the CLI links it into the task so the head has one output per class. A
    track-only folder has no classes (`labels == []`). `reverse_complement` flips training examples to
    the other strand at random (see SequenceDataset).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        max_length: int | None = None,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        seed: int = 0,
        reverse_complement: bool = False,
        label_column: str = "label",
    ):
        super().__init__()
        in_range("batch_size", batch_size, 1, integer=True)
        in_range("max_length", max_length, 1, integer=True, none_ok=True)
        in_range("val_fraction", val_fraction, 0.0, 1.0)
        if val_fraction == 1.0:
            raise ConfigError(f"val_fraction: must be below 1 (nothing would be left to train on), got "
                              f"{val_fraction!r}")
        in_range("num_workers", num_workers, 0, integer=True)
        self.reverse_complement = reverse_complement
        self.root = Path(root)
        self.batch_size, self.max_length, self.val_fraction = batch_size, max_length, val_fraction
        self.num_workers, self.seed = num_workers, seed
        if not self.root.is_dir():
            raise SWAStreamError(f"{self.root}: no such data folder")
        self.label_column = label_column
        self.layout = ("fasta" if _find_fasta(self.root, "train") else
                       "table" if _find_table(self.root, "train") else "genomic_benchmarks")
        self._splits: dict[str, list[Example]] | None = None
        self.labels = self._read_class_names()

    def _read_class_names(self) -> list[str]:
        listed = self.root / "classes.txt"
        if listed.is_file():
            return [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        if self.layout == "fasta" and is_track_only(self.root):
            return []
        if self.layout == "fasta":
            return sorted(set(_read_labels(self.root / "train.labels.tsv").values()))
        if self.layout == "table":
            return sorted(set(load_table_split(self.root, "train", self.label_column)[0]))
        return sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())

    def _load(self, split: str) -> list[Example]:
        if self.layout == "table":
            names, tokens, tracks = load_table_split(self.root, split, self.label_column)
        else:
            loader = load_fasta_split if self.layout == "fasta" else load_genomic_benchmarks_split
            names, tokens, tracks = loader(self.root, split)
        index = {name: i for i, name in enumerate(self.labels)}
        index[""] = -1  # track-only records carry no class
        unknown = sorted(set(names) - index.keys())
        if unknown:
            raise SWAStreamError(f"{self.root}: {split} has labels {unknown} that are not among {self.labels}")
        return [Example(t, index[n], tr) for n, t, tr in zip(names, tokens, tracks, strict=True)]

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        train = self._load("train")
        if self.layout == "fasta" or (self.layout == "table" and _find_table(self.root, "val")):
            val = self._load("val")
        else:  # no validation split (Genomic Benchmarks, or a table without val): a seeded fraction of train
            order = list(range(len(train)))
            random.Random(self.seed).shuffle(order)
            cut = max(1, int(len(order) * self.val_fraction))
            val, train = [train[i] for i in order[:cut]], [train[i] for i in order[cut:]]
        self._splits = {"train": train, "val": val, "test": self._load("test")}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        dataset = SequenceDataset(self._splits[split], self.max_length if shuffle else None, self.seed,
                                  reverse_complement=self.reverse_complement and shuffle)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
