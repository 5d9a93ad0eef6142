"""A synthetic long-range DNA benchmark: the class depends on the distance between two motifs.

Every sequence holds one copy of motif A and one of motif B (each base mutated with probability
`mutation`), in either order, on a background drawn from an order-3 Markov chain fitted to human DNA
(`background_kmers.json`). The class is `near` when the motifs start 150-300 bp apart and `far` when
they are 600-900 bp apart. Presence alone says nothing, so a model must relate the two motifs:

- one centred (64, 64) layer spans 129 positions: no position sees both motifs in either class;
- four such layers reach 256 bp each way (a 513 bp span): a position between the motifs sees both
  when they are near, and none does when they are far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from swa_stream.tasks.dna.tokenizer import ALPHABET

MOTIF_A = "CACGTGACGT"
MOTIF_B = "GATAAGGCCT"
CLASSES = ["far", "near"]
NEAR_GAP = (150, 300)
FAR_GAP = (600, 900)


@dataclass
class SyntheticRecord:
    id: str
    sequence: str
    label: str
    motifs: list[tuple[int, int, str]]  # (start, end, name), 0-based half-open


def _markov_table() -> np.ndarray:
    counts = json.loads(resources.files("swa_stream.tasks.dna").joinpath("background_kmers.json").read_text())
    table = np.asarray(counts["counts"], dtype=np.float64)
    return np.cumsum(table / table.sum(axis=1, keepdims=True), axis=1)


def background(count: int, length: int, rng: np.random.Generator, cumulative: np.ndarray) -> np.ndarray:
    """Tokens 0..3 (count, length) from the order-3 chain, all sequences at once; first 3 bases uniform."""
    out = np.empty((count, length), dtype=np.int64)
    out[:, :3] = rng.integers(0, 4, size=(count, min(3, length)))
    draws = rng.random((count, length))
    for i in range(3, length):
        context = 16 * out[:, i - 3] + 4 * out[:, i - 2] + out[:, i - 1]
        out[:, i] = np.minimum(3, (draws[:, i, None] > cumulative[context]).sum(axis=1))
    return out


def _plant(tokens: np.ndarray, start: int, motif: str, rng: np.random.Generator, mutation: float) -> None:
    bases = np.array([ALPHABET.index(c) for c in motif])
    mutate = rng.random(len(bases)) < mutation
    bases[mutate] = rng.integers(0, 4, size=int(mutate.sum()))
    tokens[start : start + len(bases)] = bases


def make_records(
    count: int, split: str, rng: np.random.Generator, length: int, mutation: float
) -> list[SyntheticRecord]:
    tokens = background(count, length, rng, _markov_table())
    motifs = {"motif_a": MOTIF_A, "motif_b": MOTIF_B}
    records = []
    for i in range(count):
        label = CLASSES[int(rng.integers(0, 2))]
        low, high = NEAR_GAP if label == "near" else FAR_GAP
        gap = int(rng.integers(low, high + 1))
        first = int(rng.integers(0, length - gap - len(MOTIF_B) + 1))
        names = ["motif_a", "motif_b"] if rng.random() < 0.5 else ["motif_b", "motif_a"]
        placed = []
        for start, name in ((first, names[0]), (first + gap, names[1])):
            _plant(tokens[i], start, motifs[name], rng, mutation)
            placed.append((start, start + len(motifs[name]), name))
        sequence = "".join(ALPHABET[t] for t in tokens[i])
        records.append(SyntheticRecord(f"{split}_{i:06d}", sequence, label, placed))
    return records


def write_split(out: Path, split: str, count: int, seed: int, length: int, mutation: float) -> None:
    """DIR/<split>.fa, <split>.labels.tsv (id<TAB>label) and <split>.bed (per-position truth)."""
    records = make_records(count, split, np.random.default_rng(seed), length, mutation)
    with (
        open(out / f"{split}.fa", "w") as fa,
        open(out / f"{split}.labels.tsv", "w") as tsv,
        open(out / f"{split}.bed", "w") as bed,
    ):
        tsv.write("id\tlabel\n")
        for rec in records:
            fa.write(f">{rec.id}\n")
            fa.writelines(rec.sequence[j : j + 80] + "\n" for j in range(0, length, 80))
            tsv.write(f"{rec.id}\t{rec.label}\n")
            bed.writelines(f"{rec.id}\t{start}\t{end}\t{name}\n" for start, end, name in rec.motifs)


def write_benchmark(
    out: str | Path, n_train: int = 8000, n_val: int = 1000, n_test: int = 1000, length: int = 1024,
    mutation: float = 0.1, seed: int = 0, progress=None,
) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for offset, (split, count) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        write_split(out, split, count, seed * 1000 + offset, length, mutation)
        if progress:
            progress(split, count)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return out
