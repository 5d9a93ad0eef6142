"""Gene calls on a draft assembly: E. coli K-12 cut into contigs, each scored on its own, against RefSeq.

A draft assembly (or a metagenome's contigs) cuts genes at every contig edge. call-genes lets a gene run
off a record's end (Prodigal's default; `--closed-ends` is prodigal -c); this measures what that is worth,
beside Prodigal (pyrodigal, single mode, trained on all the contigs together, its own edge genes allowed or
not). Truth: RefSeq's non-pseudo CDS, cut to each contig; a base is coding if a CDS covers it. Per-base
accuracy counts every base of every contig; a call covers its bases (the called track above 0.5 is the
same thing).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/draft_contigs.py --contig 20000 --json docs/draft_contigs.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from swa_stream.tasks.dna.annotation import mask, read_gff3
from swa_stream.tasks.dna.genes import TEST_FASTA, TEST_GFF, read_genome
from swa_stream.tasks.dna.orfs import call_genes
from swa_stream.tasks.dna.tokenizer import encode
from swa_stream.tasks.dna.track import stream_both_strands


def covered(n: int, calls) -> np.ndarray:
    return mask(n, [(a, b, s) for a, b, s in calls]).astype(bool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--model", default="bacteria-genes")
    ap.add_argument("--contig", type=int, default=20000, help="contig length in bp")
    ap.add_argument("--json")
    args = ap.parse_args()
    import pyrodigal

    from swa_stream.pipelines.bundles import load_dna_model

    shared = Path(args.shared)
    (rec_id, genome), *_ = read_genome(shared / "genomes" / "annotated" / TEST_FASTA)
    truth_all = mask(len(genome), read_gff3(shared / "genomes" / "annotated" / TEST_GFF)[rec_id]).astype(bool)
    model = load_dna_model(args.model)
    cuts = range(0, len(genome), args.contig)
    contigs = [genome[a : a + args.contig] for a in cuts]
    finder = pyrodigal.GeneFinder()
    finder.train(*contigs)
    tally = {k: [0, 0] for k in ("ours", "ours_closed", "prodigal", "prodigal_closed")}
    partial, began = 0, time.perf_counter()
    for start, seq in zip(cuts, contigs, strict=True):
        tokens, truth = encode(seq), truth_all[start : start + len(seq)]
        prob = stream_both_strands(model, tokens)
        for name, edges in (("ours", True), ("ours_closed", False)):
            genes = call_genes(tokens, prob, edges=edges)
            partial += edges * sum(g.partial != "00" for g in genes)
            hit = covered(len(seq), [(g.start, g.end, g.strand) for g in genes]) == truth
            tally[name][0] += int(hit.sum())
        for name, closed in (("prodigal", False), ("prodigal_closed", True)):
            f = pyrodigal.GeneFinder(finder.training_info, closed=closed)
            calls = [(g.begin - 1, g.end, "+" if g.strand == 1 else "-") for g in f.find_genes(seq)]
            tally[name][0] += int((covered(len(seq), calls) == truth).sum())
        for name in tally:
            tally[name][1] += len(seq)
    result = {"contig_bp": args.contig, "contigs": len(contigs), "bp": len(genome), "model": args.model,
              "pyrodigal": pyrodigal.__version__, "our_partial_calls": int(partial),
              "seconds": round(time.perf_counter() - began, 1),
              "accuracy": {k: round(v[0] / v[1], 5) for k, v in tally.items()}}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
