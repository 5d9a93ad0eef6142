"""The UCI primate splice-junction set (StatLog version: 3,186 sequences of 60 bp, -30..+30 around a
candidate junction; classes `ei` donor, `ie` acceptor, `n` neither) in the FASTA layout of
`DNADataModule`, keeping the shared file's split (`split=train|test` in its headers: 2,000 and 1,186, StatLog's
sizes; ../shared/data/splice/SOURCES.md says the order is not confirmed to be StatLog's own split): the training
sequences train (a seeded tenth of them validates, for model selection) and the test sequences test.

    python -m swa_stream.tasks.dna.splice --shared ../shared/data --out data/primate_splice
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from swa_stream.errors import SWAStreamError
from swa_stream.tasks.dna.promoters import write_split
from swa_stream.tasks.dna.tokenizer import decode, read_fasta

CLASSES = ("n", "ei", "ie")
FASTA = "statlog_dna_splice.fa"
WIDTH = 60


def read_statlog(path: Path) -> dict[str, list[tuple[str, str]]]:
    """split -> [(sequence, class)] in file order, from headers `>dna_0000 class=n split=train`."""
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for rec in read_fasta(path):
        fields = dict(f.split("=", 1) for f in rec.description.split()[1:] if "=" in f)
        label, split = fields.get("class"), fields.get("split")
        if label not in CLASSES or split not in splits or rec.length != WIDTH:
            raise SWAStreamError(f"{path}: {rec.id}: expected class=n|ei|ie, split=train|test and {WIDTH} bases, "
                                 f"got {rec.description!r} with {rec.length} bases")
        splits[split].append((decode(rec.tokens), label))
    if not splits["train"] or not splits["test"]:
        raise SWAStreamError(f"{path}: no train or no test sequences")
    return splits


def build(shared: Path, out: Path, seed: int = 0, val_fraction: float = 0.1) -> dict[str, int]:
    splits = read_statlog(shared / "splice" / FASTA)
    train = list(splits["train"])
    random.Random(seed).shuffle(train)
    cut = int(len(train) * val_fraction)
    parts = {"train": train[cut:], "val": train[:cut], "test": splits["test"]}
    for split, items in parts.items():
        write_split(out, split, items)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return {split: len(items) for split, items in parts.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data/primate_splice"))
    args = parser.parse_args(argv)
    counts = build(args.shared, args.out)
    print(f"{args.out}: " + ", ".join(f"{split} {n}" for split, n in counts.items()))


if __name__ == "__main__":
    main()
