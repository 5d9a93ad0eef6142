"""A synthetic long-range DNA benchmark: the class depends on the distance between two motifs.

Every sequence holds one copy of motif A and one of motif B (each base mutated with probability
`mutation`), in either order, on a background drawn from an order-3 Markov chain fitted to human DNA
(`background_kmers.json`). The class is `near` when the motifs start 50-75 bp apart and `far` when
they are 150-225 bp apart. Presence alone says nothing, so a model must relate the two motifs. With the
demo model's width-9 stem (4 bp each way) in front of centred (16, 16) layers:

- one layer reaches 20 bp each way (a 41 bp span): no position sees any base of both motifs in either
  class;
- four layers reach 68 bp each way (a 137 bp span): a position between the motifs sees both whole
  motifs when they are near, and none sees a base of both when they are far.

Motifs stay `EDGE_MARGIN` (40) bases clear of both ends: a one-layer output within 20 bp of an end
sees the end, and it sees 20 bp inward, so no such output sees a motif. Far pairs need more room, so
without the margin they crowd the ends of a record, and a single layer that sees a motif beside an end
would learn "far" from that alone. On 256 bp records with no margin, "far if a motif lies within 20 bp
of an end" was right for 73% of test records, and a 1-layer model reached 62.5%. Deeper models still
reach the ends (four layers: 68 bp); docs/dna.md measures the demo model on long records too, where the
ends are out of reach.

The training split alone also holds easier near pairs, 30-75 bp apart: in 20 of its 46 near gaps one
layer can see both motifs. These stepping stones were not enough on their own for a model trained from
scratch; docs/dna.md lists the runs and the two-phase recipe that trained the demo model (with them,
whether they are needed there was not isolated). Validation and test hold only the benchmark's 50-75 vs
150-225 bp, so they measure the long-range rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from swa_stream.tasks.dna.tokenizer import ALPHABET, decode

MOTIF_A = "CACGTGACGT"
MOTIF_B = "GATAAGGCCT"
CLASSES = ["far", "near"]
NEAR_GAP = (50, 75)
TRAIN_NEAR_GAP = (30, 75)  # the training split's near pairs: see the module docstring
FAR_GAP = (150, 225)
EDGE_MARGIN = 40  # bases kept free of motifs at each end: see the module docstring


def min_length(edge_margin: int = EDGE_MARGIN) -> int:
    """The shortest record that fits the farthest pair inside the margins."""
    return FAR_GAP[1] + len(MOTIF_B) + 2 * edge_margin



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
    count: int, split: str, rng: np.random.Generator, length: int, mutation: float,
    near_gap: tuple[int, int] = NEAR_GAP, edge_margin: int = EDGE_MARGIN,
) -> list[SyntheticRecord]:
    tokens = background(count, length, rng, _markov_table())
    motifs = {"motif_a": MOTIF_A, "motif_b": MOTIF_B}
    records = []
    for i in range(count):
        label = CLASSES[int(rng.integers(0, 2))]
        low, high = near_gap if label == "near" else FAR_GAP
        gap = int(rng.integers(low, high + 1))
        first = int(rng.integers(edge_margin, length - edge_margin - gap - len(MOTIF_B) + 1))
        names = ["motif_a", "motif_b"] if rng.random() < 0.5 else ["motif_b", "motif_a"]
        placed = []
        for start, name in ((first, names[0]), (first + gap, names[1])):
            _plant(tokens[i], start, motifs[name], rng, mutation)
            placed.append((start, start + len(motifs[name]), name))
        sequence = decode(tokens[i])
        records.append(SyntheticRecord(f"{split}_{i:06d}", sequence, label, placed))
    return records


def write_split(
    out: Path, split: str, count: int, seed: int, length: int, mutation: float, edge_margin: int = EDGE_MARGIN
) -> None:
    """DIR/<split>.fa, <split>.labels.tsv (id<TAB>label) and <split>.bed (per-position truth)."""
    near_gap = TRAIN_NEAR_GAP if split == "train" else NEAR_GAP
    records = make_records(count, split, np.random.default_rng(seed), length, mutation, near_gap, edge_margin)
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
    out: str | Path, n_train: int = 8000, n_val: int = 1000, n_test: int = 1000, length: int = 320,
    mutation: float = 0.1, seed: int = 0, progress=None, edge_margin: int = EDGE_MARGIN,
) -> Path:
    """`edge_margin` < EDGE_MARGIN gives the warm-up variant whose ends leak the class (docs/dna.md)."""
    if length < min_length(edge_margin):
        raise ValueError(f"length: {length} bp leaves no room for the farthest pair (>= {min_length(edge_margin)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for offset, (split, count) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        write_split(out, split, count, seed * 1000 + offset, length, mutation, edge_margin)
        if progress:
            progress(split, count)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return out


def write_examples(path: str | Path, count: int = 6, length: int = 320, seed: int = 12345) -> Path:
    """The small FASTA that `make demo` scores: records alternate near/far and carry their truth and motif
    gap in the description (`>example_0 truth=near motif_gap=67bp`). Made from the test-split generator
    with a seed of its own, so no record is in the demo data."""
    rng = np.random.default_rng(seed)
    records: list[SyntheticRecord] = []
    while len(records) < count:  # draw until the classes alternate
        (rec,) = make_records(1, "example", rng, length, mutation=0.1)
        if rec.label == CLASSES[(len(records) + 1) % 2]:
            records.append(rec)
    path = Path(path)
    with open(path, "w") as fa:
        for i, rec in enumerate(records):
            gap = abs(rec.motifs[1][0] - rec.motifs[0][0])
            fa.write(f">example_{i} truth={rec.label} motif_gap={gap}bp\n")
            fa.writelines(rec.sequence[j : j + 80] + "\n" for j in range(0, length, 80))
    return path
