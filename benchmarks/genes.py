"""The gene track on held-out genomes, beside Prodigal.

For each genome: stream the whole chromosome through the model, exactly, both strands at once (the
forward sequence and its reverse complement as two rows of one batch), average the two strands'
probabilities per base, and score them against the truth mask ("inside a CDS on either strand"):
per-position accuracy at 0.5, AUROC, F1. Prodigal (pyrodigal, single mode, trained on the very genome
it annotates) gets the same per-position scores from its gene calls.

- E. coli K-12 MG1655 against its RefSeq annotation: the held-out claim (no part in training or selection).
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
from swa_stream.tasks.dna.genes import TEST_FASTA, TEST_GFF, prodigal_genes, read_genome
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


def evaluate(model, name: str, records, truth_intervals, prodigal_intervals) -> dict:
    rows = []
    for rec_id, seq in records:
        truth = mask(len(seq), truth_intervals.get(rec_id, []))
        tokens = encode(seq)
        valid = tokens < 4  # N has no truth
        began = time.perf_counter()
        prob = stream_both_strands(model, tokens)
        seconds = time.perf_counter() - began
        ours = per_position_scores(prob, truth, valid)
        calls = mask(len(seq), prodigal_intervals.get(rec_id, [])).astype(np.float32)
        theirs = per_position_scores(calls, truth, valid)
        rows.append({"genome": name, "record": rec_id, "bp": len(seq), "coding_fraction": float(truth[valid].mean()),
                     "ours": ours, "prodigal": theirs, "seconds": round(seconds, 1),
                     "kbp_per_s_both_strands": round(len(seq) / seconds / 1e3, 1)})
        print(f"{name} {rec_id}: {len(seq):,} bp, ours acc {ours['accuracy']:.4f} AUROC {ours.get('auroc', 0):.4f} "
              f"F1 {ours['f1']:.4f} | Prodigal acc {theirs['accuracy']:.4f} F1 {theirs['f1']:.4f} | "
              f"{rows[-1]['kbp_per_s_both_strands']} kbp/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pipelines/models/bacteria-genes")
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-536", action="store_true", help="only the annotated E. coli K-12")
    args = parser.parse_args()
    model = load_model(args.model)
    genomes = args.shared / "genomes"
    k12 = read_genome(genomes / "annotated" / TEST_FASTA)
    rows = evaluate(model, "E. coli K-12 MG1655 (RefSeq)", k12, read_gff3(genomes / "annotated" / TEST_GFF),
                    prodigal_genes(k12))
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
