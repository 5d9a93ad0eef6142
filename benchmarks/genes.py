"""The gene track on held-out genomes, beside Prodigal.

For each genome: stream the whole chromosome through the model, exactly, both strands at once (the
forward sequence and its reverse complement as two rows of one batch), average the two strands'
probabilities per base, and score them against the truth mask ("inside a CDS on either strand"):
per-position accuracy at 0.5, AUROC, F1. Two rows for ours: the raw track, and the called track of
`swa-stream call-genes` (the open reading frames the track covers best, tasks/dna/orfs.py), whose gene
calls are also matched to the truth by stop codon. Prodigal (pyrodigal, single mode, trained on the very
genome it annotates) gets the same scores from its gene calls.

- E. coli K-12 MG1655 against its RefSeq annotation: the held-out claim (no part in training or selection).
  Scored twice: strictly (a base is coding when it lies in a CDS; pseudo CDS are not CDS), and with the
  annotation's pseudogenes left unscored, as N is: their disrupted reading frames look like genes to every
  gene finder (84% of their bases lie in Prodigal's calls), and our training labels (pyrodigal's calls)
  mark them as genes.
- E. coli 536 against pyrodigal's calls (no annotation shipped): a second genome, a weaker truth.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/genes.py --model pipelines/models/bacteria-genes \
        --json docs/genes.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from swa_stream.tasks.dna.annotation import mask, read_gff3
from swa_stream.tasks.dna.genes import TEST_FASTA, TEST_GFF, VAL, prodigal_genes, read_genome
from swa_stream.tasks.dna.orfs import call_genes, called_track, stop_matches
from swa_stream.tasks.dna.tokenizer import encode
from swa_stream.tasks.dna.track import per_position_scores, stream_both_strands


def load_model(directory: str):
    from swa_stream.bundle import load_bundle, load_weights
    from swa_stream.config import SWAConfig
    from swa_stream.tasks.dna.model import DNAModel

    config, weights = load_bundle(directory, kind="dna")
    model = DNAModel(SWAConfig.from_dict(config["encoder"]), config.get("classes", []),
                     config.get("tracks"), stem_kernel=config.get("stem_kernel", 0))
    load_weights(model, weights, directory)
    return model.eval()


def evaluate(model, name: str, records, truth_intervals, prodigal_intervals, unscored=None) -> dict:
    """`unscored`: intervals (per record) that a second set of scores leaves out, as it leaves out N: the
    annotation's pseudogenes, which are neither protein-coding genes nor plain non-coding sequence."""
    rows = []
    for rec_id, seq in records:
        truth = mask(len(seq), truth_intervals.get(rec_id, []))
        tokens = encode(seq)
        valid = tokens < 4  # N has no truth
        began = time.perf_counter()
        prob = stream_both_strands(model, tokens)
        seconds = time.perf_counter() - began
        ours = per_position_scores(prob, truth, valid)
        began = time.perf_counter()
        genes = call_genes(tokens, prob)
        track = called_track(prob, genes)
        called = per_position_scores(track, truth, valid)
        call_seconds = time.perf_counter() - began
        truth_genes, prodigal = truth_intervals.get(rec_id, []), prodigal_intervals.get(rec_id, [])
        called["stops"] = stop_matches([(g.start, g.end, g.strand) for g in genes], truth_genes)
        calls = mask(len(seq), prodigal).astype(np.float32)
        theirs = per_position_scores(calls, truth, valid)
        theirs["stops"] = stop_matches(prodigal, truth_genes)
        rows.append({"genome": name, "record": rec_id, "bp": len(seq), "coding_fraction": float(truth[valid].mean()),
                     "ours": ours, "ours_called": called, "prodigal": theirs, "seconds": round(seconds, 1),
                     "call_seconds": round(call_seconds, 1),
                     "kbp_per_s_both_strands": round(len(seq) / seconds / 1e3, 1)})
        print(f"{name} {rec_id}: {len(seq):,} bp | track acc {ours['accuracy']:.4f} AUROC {ours.get('auroc', 0):.4f} "
              f"| called acc {called['accuracy']:.4f} AUROC {called.get('auroc', 0):.4f}, stops found "
              f"{called['stops']['sensitivity']:.3f}, precision {called['stops']['precision']:.3f} | Prodigal acc "
              f"{theirs['accuracy']:.4f}, stops found {theirs['stops']['sensitivity']:.3f} | "
              f"{rows[-1]['kbp_per_s_both_strands']} kbp/s + {call_seconds:.1f} s calling", flush=True)
        if unscored is not None:
            left_out = mask(len(seq), unscored.get(rec_id, [])).astype(bool) & (truth == 0)  # a CDS inside stays
            kept = valid & ~left_out
            rows[-1]["pseudogenes_unscored"] = {
                "bp_left_out": int(left_out.sum()), "ours": per_position_scores(prob, truth, kept),
                "ours_called": per_position_scores(track, truth, kept),
                "prodigal": per_position_scores(calls, truth, kept)}
            alt = rows[-1]["pseudogenes_unscored"]
            print(f"  {alt['bp_left_out']:,} pseudogene bp unscored: track acc {alt['ours']['accuracy']:.4f} AUROC "
                  f"{alt['ours']['auroc']:.4f} | called acc {alt['ours_called']['accuracy']:.4f} AUROC "
                  f"{alt['ours_called']['auroc']:.4f} | Prodigal acc {alt['prodigal']['accuracy']:.4f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pipelines/models/bacteria-genes")
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-536", action="store_true", help="only the annotated E. coli K-12")
    parser.add_argument("--val", action="store_true", help="also the validation genome (V. cholerae against "
                        "pyrodigal's calls), on which call-genes' defaults were chosen")
    args = parser.parse_args()
    model = load_model(args.model)
    genomes = args.shared / "genomes"
    k12 = read_genome(genomes / "annotated" / TEST_FASTA)
    rows = []
    if args.val:
        vc = read_genome(genomes / "unannotated" / VAL[0])
        calls = prodigal_genes(vc)
        rows += evaluate(model, "V. cholerae O395 (validation; pyrodigal's calls as truth)", vc, calls, calls)
    gff = genomes / "annotated" / TEST_GFF
    rows += evaluate(model, "E. coli K-12 MG1655 (RefSeq)", k12, read_gff3(gff), prodigal_genes(k12),
                     unscored=read_gff3(gff, feature="pseudogene", include_pseudo=True))
    if not args.skip_536:
        e536 = read_genome(genomes / "unannotated" / "ecoli_536_NC_008253.fna.gz")
        calls = prodigal_genes(e536)
        rows += evaluate(model, "E. coli 536 (pyrodigal calls as truth)", e536, calls, calls)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB, threads {torch.get_num_threads()}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "rows": rows, "peak_rss_mb": round(peak),
                                         "threads": torch.get_num_threads()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
