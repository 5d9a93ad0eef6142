"""What a promoter scan of a real genome finds: `score-fasta --windows` with ecoli-promoters, each window's
centre placed inside or outside the genes that `call-genes` finds on the same sequence, and the share of
each kind of window over a few thresholds (docs/dna.md, "Scanning a genome with it").

    .venv/bin/python benchmarks/promoter_scan.py ../shared/data/genomes/unannotated/lambda_phage.fa.gz
    .venv/bin/python benchmarks/promoter_scan.py ../shared/data/genomes/unannotated/ecoli_536_NC_008253.fna.gz \
        --first 200000 --json runs/scan_e536.json

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
from swa_stream.tasks.dna.tokenizer import ALPHABET

THRESHOLDS = (0.5, 0.9, 0.99)


def swa_stream(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("swa-stream")), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("genome", type=Path)
    parser.add_argument("--model", default="ecoli-promoters")
    parser.add_argument("--first", type=int, help="keep only the first N bp of the first record")
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        genome = args.genome
        if args.first:
            rec = next(iter(read_sequences(genome)))
            bases = "".join(ALPHABET[t] for t in rec.tokens[: args.first])
            genome = work / "region.fa"
            genome.write_text(f">{rec.id}_first_{args.first}\n{bases}\n")
        seconds = swa_stream("score-fasta", str(genome), "--model", args.model, "--windows", "81", "--stride",
                             str(args.stride), "--out", str(work / "w.zarr"), "--tsv", str(work / "w.tsv"))
        swa_stream("call-genes", str(genome), "--gff", str(work / "genes.gff3"))
        coding = {}
        for line in (work / "genes.gff3").read_text().splitlines():
            cells = line.split("\t")
            if len(cells) == 9 and cells[2] == "CDS":
                coding.setdefault(cells[0], []).append((int(cells[3]) - 1, int(cells[4])))
        with open(work / "w.tsv") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    lengths = {}
    for r in rows:
        lengths[r["seq_id"]] = max(lengths.get(r["seq_id"], 0), int(r["end"]))
    masks = {seq: np.zeros(n, bool) for seq, n in lengths.items()}
    for seq, genes in coding.items():
        for lo, hi in genes:
            masks[seq][lo:hi] = True
    inside = np.array([masks[r["seq_id"]][(int(r["start"]) + int(r["end"])) // 2] for r in rows])
    p = np.array([float(r["p_promoter"]) for r in rows])
    result = {"genome": str(args.genome), "first": args.first, "stride": args.stride, "windows": len(rows),
              "scan_seconds": round(seconds, 1), "coding_windows": int(inside.sum()),
              "coding_over": {str(t): float((p[inside] > t).mean()) for t in THRESHOLDS},
              "noncoding_over": {str(t): float((p[~inside] > t).mean()) for t in THRESHOLDS}}
    print(f"{args.genome.name}: {len(rows):,} windows in {seconds:.1f} s; {inside.mean():.1%} centred in called genes")
    for t in THRESHOLDS:
        print(f"  over {t}: coding windows {result['coding_over'][str(t)]:.1%}, "
              f"non-coding windows {result['noncoding_over'][str(t)]:.1%}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
