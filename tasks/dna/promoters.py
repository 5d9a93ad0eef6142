"""CNNProm's E. coli sigma-70 promoter set (81 bp, -60..+20 around the TSS) in the FASTA layout, as
stratified cross-validation folds and as one folder with all of it for the shipped model.

The shared set is a seeded 80% of CNNProm's files (671 promoters, 2,400 non-promoters); the other 20% is
held out upstream and never seen here. Fold k tests on the k-th fifth of each class, validates (model
selection) on a seeded tenth of the rest, and trains on what remains.

`--bacillus` adds CNNProm's B. subtilis sets (373 sigma-A promoters, whose -35 and -10 boxes are sigma-70's,
and 1,000 non-promoters) to every training part, never to a validation or test part; the E. coli splits are
the same with or without it.

`--genome-negatives N` adds N non-promoters cut from the four genomes that train bacteria-genes, labelled by
their pyrodigal gene calls (the `bench` extra), to every training part in the same way: half from between two
convergent genes (-> <-: both genes' 3' ends face the gap, so neither strand's gene starts there), half from
gene interiors at least 200 bp past the start, each read 5' to 3' on a random strand. CNNProm's non-promoters
are mostly E. coli coding sequence, and a scan of a real genome finds intergenic sequence "promoter" (docs/dna.md).

    python -m swa_stream.tasks.dna.promoters --shared ../shared/data --out data/ecoli_promoters
    python -m swa_stream.tasks.dna.promoters --shared ../shared/data --out data/ecoli_bsub_promoters --bacillus
    python -m swa_stream.tasks.dna.promoters --shared ../shared/data --out data/ecoli_gneg_promoters \
        --genome-negatives 2000
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from swa_stream.errors import SWAStreamError

CLASSES = ("non_promoter", "promoter")
FILES = {"promoter": "Ecoli_prom.fa", "non_promoter": "Ecoli_non_prom.fa"}
BACILLUS = {"promoter": "Bacillus_prom.fa", "non_promoter": "Bacillus_non_prom.fa"}


def read_sequences(path: Path) -> list[str]:
    """The sequences of a FASTA file, in order, read by `read_fasta` (its validation and error lines;
    CNNProm's non-promoter headers are not unique ids, which it allows)."""
    from swa_stream.tasks.dna.tokenizer import decode, read_fasta

    seqs = [decode(rec.tokens) for rec in read_fasta(path)]
    if not seqs:
        raise SWAStreamError(f"{path}: no sequences")
    return seqs


WIDTH = 81  # CNNProm's windows: -60..+20 around the TSS


def convergent_gaps(calls) -> list[tuple[int, int]]:
    """(start, end) of each gap between two neighbouring convergent genes (-> <-), where both genes' 3' ends
    face the gap, so neither strand's gene starts there. calls: (begin, end, strand), 0-based, end exclusive."""
    calls = sorted(calls)
    return [(a_end, b_start) for (_, a_end, a_strand), (b_start, _, b_strand) in zip(calls, calls[1:], strict=False)
            if a_strand == "+" and b_strand == "-" and b_start > a_end]


def candidate_windows(seq: str, calls, rng: random.Random) -> tuple[list[str], list[str]]:
    """The + strand WIDTH-bp windows of one record that hold no gene start: one centred in each gap between
    convergent genes (`convergent_gaps`), and one at a random place in each gene, at least 200 bp past its
    start codon. calls: (begin, end, strand) with 0-based begin and exclusive end."""
    gaps = []
    for a_end, b_start in convergent_gaps(calls):
        lo = (a_end + b_start) // 2 - WIDTH // 2
        if lo >= 0:
            gaps.append(seq[lo : lo + WIDTH])
    inside = []
    for begin, end, strand in sorted(calls):
        lo, hi = (begin + 200, end - WIDTH) if strand == "+" else (begin, end - 200 - WIDTH)
        if hi > lo:
            at = rng.randrange(lo, hi)
            inside.append(seq[at : at + WIDTH])
    return gaps, inside


def genome_negatives(shared: Path, n: int, seed: int = 0) -> list[str]:
    """n WIDTH-bp non-promoter windows from bacteria-genes' training genomes (see the module docstring)."""
    from swa_stream.tasks.dna.genes import TRAIN, prodigal_genes, read_genome

    complement = str.maketrans("ACGTN", "TGCAN")
    rng = random.Random(seed + 2)
    convergent, interior = [], []
    for name in TRAIN:
        print(f"calling genes in {name} (pyrodigal) for non-promoter windows ...", file=sys.stderr)
        records = read_genome(shared / "genomes" / "unannotated" / name)
        genes = prodigal_genes(records)
        for rec_id, seq in records:
            gaps, inside = candidate_windows(seq, genes[rec_id], rng)
            convergent += gaps
            interior += inside
    windows = []
    for pool, want in ((convergent, n // 2), (interior, n - n // 2)):
        pool = [w for w in pool if len(w) == WIDTH and set(w) <= set("ACGT")]
        if len(pool) < want:
            raise SWAStreamError(f"--genome-negatives: only {len(pool)} windows of this kind, {want} asked for")
        for w in rng.sample(pool, want):
            windows.append(w if rng.random() < 0.5 else w.translate(complement)[::-1])
    return windows


def write_split(folder: Path, split: str, items: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{split}.fa", "w") as fasta, open(folder / f"{split}.labels.tsv", "w") as labels:
        labels.write("id\tlabel\n")
        for i, (seq, label) in enumerate(items):
            fasta.write(f">{split}{i}_{label}\n{seq}\n")
            labels.write(f"{split}{i}_{label}\t{label}\n")


def build(shared: Path, out: Path, folds: int = 5, seed: int = 0, val_fraction: float = 0.1,
          bacillus: bool = False, negatives: int = 0) -> None:
    data = {label: read_sequences(shared / "promoters" / name) for label, name in FILES.items()}
    rng = random.Random(seed)
    for seqs in data.values():
        rng.shuffle(seqs)
    # Extra training sequences, mixed in with their own generator so that the E. coli splits stay the same.
    extra = [(seq, label) for label, name in BACILLUS.items()
             for seq in read_sequences(shared / "promoters" / name)] if bacillus else []
    if negatives:
        extra += [(seq, "non_promoter") for seq in genome_negatives(shared, negatives, seed)]
    mix = random.Random(seed + 1)

    def with_extra(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not extra:
            return items
        items = items + extra
        mix.shuffle(items)
        return items
    for k in range(folds):
        train, test = [], []
        for label, seqs in data.items():
            for i, seq in enumerate(seqs):
                (test if i % folds == k else train).append((seq, label))
        rng.shuffle(train)
        cut = int(len(train) * val_fraction)
        for split, items in (("train", with_extra(train[cut:])), ("val", train[:cut]), ("test", test)):
            write_split(out / f"fold{k}", split, items)
        (out / f"fold{k}" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    everything = [(seq, label) for label, seqs in data.items() for seq in seqs]
    rng.shuffle(everything)
    # The shipped model trains on all of it for the epochs that cross-validation chose; its val/test
    # files hold a tenth of the same data only so that the data module has them (they measure nothing).
    for split, items in (("train", with_extra(everything)), ("val", everything[: len(everything) // 10]),
                         ("test", everything[: len(everything) // 10])):
        write_split(out / "all", split, items)
    (out / "all" / "classes.txt").write_text("\n".join(CLASSES) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data/ecoli_promoters"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--bacillus", action="store_true",
                        help="add the B. subtilis promoters and non-promoters to every training part")
    parser.add_argument("--genome-negatives", type=int, default=0, metavar="N",
                        help="add N non-promoter windows from four real genomes to every training part")
    args = parser.parse_args(argv)
    build(args.shared, args.out, args.folds, bacillus=args.bacillus, negatives=args.genome_negatives)


if __name__ == "__main__":
    main()
