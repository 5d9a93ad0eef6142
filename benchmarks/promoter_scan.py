"""What a promoter scan of a real genome finds: `score-fasta --windows` with ecoli-promoters, each window's
centre placed by the genes that `call-genes` finds on the same sequence (inside a gene; in the gap between
two convergent genes, -> <-, where neither strand's gene starts; or in other non-coding sequence, which holds
the promoters), and the share of each kind of window over a few thresholds (docs/dna.md, "Scanning a genome").

    .venv/bin/python benchmarks/promoter_scan.py ../shared/data/genomes/unannotated/lambda_phage.fa.gz \
        --json docs/promoter_scan_lambda.json
    .venv/bin/python benchmarks/promoter_scan.py ../shared/data/genomes/unannotated/ecoli_536_NC_008253.fna.gz \
        --first 200000 --json docs/promoter_scan_e536.json

`--model A B ...` scans with each bundle (default: ecoli-promoters).

`--first N` keeps the first N bp of the first record (written to a FASTA in the work folder). Both commands
run as a user runs them, through the `swa-stream` beside this interpreter.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from swa_stream.tasks.dna.formats import read_sequences
from swa_stream.tasks.dna.promoters import convergent_gaps
from swa_stream.tasks.dna.tokenizer import decode

THRESHOLDS = (0.5, 0.9, 0.99)


def swa_stream(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("swa-stream")), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rank_auc(high: np.ndarray, low: np.ndarray) -> float | None:
    """P(a window of `high` outscores one of `low`), ties counting half (the Mann-Whitney AUROC)."""
    if not len(high) or not len(low):
        return None
    both = np.concatenate([high, low])
    ranks = np.empty(len(both))
    ranks[both.argsort(kind="stable")] = np.arange(1, len(both) + 1)
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]  # tied values share their mean rank
    return float((ranks[: len(high)].sum() - len(high) * (len(high) + 1) / 2) / (len(high) * len(low)))


def region_kinds(coding: dict, lengths: dict) -> dict:
    """Per base of each sequence: 1 inside a called gene, 2 in a gap between convergent genes (-> <-), else 0."""
    kinds = {seq: np.zeros(n, np.int8) for seq, n in lengths.items()}
    for seq, genes in coding.items():
        if seq not in kinds:
            continue
        for a_end, b_start in convergent_gaps(genes):
            kinds[seq][a_end:b_start] = 2
        for lo, hi, _ in genes:
            kinds[seq][lo:hi] = 1
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("genome", type=Path)
    parser.add_argument("--model", nargs="+", default=["ecoli-promoters"])
    parser.add_argument("--first", type=int, help="keep only the first N bp of the first record")
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"genome": str(args.genome), "first": args.first, "stride": args.stride, "models": {}}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        genome = args.genome
        if args.first:
            rec = next(iter(read_sequences(genome)))
            bases = decode(rec.tokens[: args.first])
            genome = work / "region.fa"
            genome.write_text(f">{rec.id}_first_{args.first}\n{bases}\n")
        swa_stream("call-genes", str(genome), "--gff", str(work / "genes.gff3"))
        coding = {}
        for line in (work / "genes.gff3").read_text().splitlines():
            cells = line.split("\t")
            if len(cells) == 9 and cells[2] == "CDS":
                coding.setdefault(cells[0], []).append((int(cells[3]) - 1, int(cells[4]), cells[6]))
        for i, model in enumerate(args.model):
            out = work / f"w{i}"
            seconds = swa_stream("score-fasta", str(genome), "--model", model, "--windows", "81", "--stride",
                                 str(args.stride), "--out", f"{out}.zarr", "--tsv", f"{out}.tsv")
            with open(f"{out}.tsv") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            lengths = {}
            for r in rows:
                lengths[r["seq_id"]] = max(lengths.get(r["seq_id"], 0), int(r["end"]))
            kinds = region_kinds(coding, lengths)
            kind = np.array([kinds[r["seq_id"]][(int(r["start"]) + int(r["end"])) // 2] for r in rows])
            p = np.array([float(r["p_promoter"]) for r in rows])
            summary = result["models"][model] = {"windows": len(rows), "scan_seconds": round(seconds, 1)}
            print(f"{args.genome.name}, {model}: {len(rows):,} windows in {seconds:.1f} s")
            for code, name in ((1, "coding"), (2, "convergent_gap")):  # threshold-free: does the promoter-bearing
                auc = rank_auc(p[kind == 0], p[kind == code])  # kind rank above the promoter-free one?
                summary[f"auroc_other_noncoding_vs_{name}"] = auc
                print(f"  AUROC, other non-coding windows against {name} windows: {auc:.3f}")
            for code, name in ((1, "coding"), (2, "convergent_gap"), (0, "other_noncoding")):
                chosen = p[kind == code]
                over = {f"over_{t}": float((chosen > t).mean()) if len(chosen) else None for t in THRESHOLDS}
                summary[name] = {"windows": len(chosen), **over}
                print(f"  {name:<16} {len(chosen):>7,} windows; over "
                      + ", ".join(f"{t}: {(chosen > t).mean():.1%}" for t in THRESHOLDS) if len(chosen) else "")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
