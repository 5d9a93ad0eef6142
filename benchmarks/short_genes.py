"""call-genes' short-gene rule, swept on the validation genome (and, once the rule is fixed, scored on the test
genome): genes of `short_length` to 250 bp are called where the track's mean over them is `short_mean` or
more and they overlap genes already kept by at most `short_overlap` of their length.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/short_genes.py --split val --grid \
        '[{"short_length": null}, {"short_length": 200, "short_mean": 0.8, "short_overlap": 0.1}]'

Validation: V. cholerae O395's two chromosomes against pyrodigal's calls; test: E. coli K-12 against RefSeq's
CDS. Each record is streamed once (both strands, exactly; cached under runs/short_genes/ by the bundle's
sha256), then every setting of the grid calls genes from the same track. Printed per setting: per-base
accuracy and AUROC of the called track (per record), and the truth's genes found by their stop codon
(recall), the calls that end at a true stop (precision), and their F1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from genes import load_model  # noqa: E402

from swa_stream.pipelines.score_fasta import weights_hash  # noqa: E402
from swa_stream.tasks.dna.annotation import mask, read_gff3  # noqa: E402
from swa_stream.tasks.dna.genes import TEST_FASTA, TEST_GFF, VAL, prodigal_genes, read_genome  # noqa: E402
from swa_stream.tasks.dna.orfs import call_genes, called_track, stop_matches  # noqa: E402
from swa_stream.tasks.dna.tokenizer import encode  # noqa: E402
from swa_stream.tasks.dna.track import per_position_scores, stream_both_strands  # noqa: E402


def tracks(split: str, model_dir: str, shared: Path) -> list:
    """(record id, tokens, track, truth intervals) per record; the tracks cached as .npz (no pickle)."""
    cache = Path("runs/short_genes") / f"{split}-{weights_hash(model_dir)[:16]}.npz"
    genomes = shared / "genomes"
    if split == "val":
        records = read_genome(genomes / "unannotated" / VAL[0])
        truth = prodigal_genes(records)
    else:
        records = read_genome(genomes / "annotated" / TEST_FASTA)
        truth = read_gff3(genomes / "annotated" / TEST_GFF)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            probs = [saved[f"p{i}"] for i in range(len(records))]
    else:
        model = load_model(model_dir)
        probs = [stream_both_strands(model, encode(seq)) for _, seq in records]
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"p{i}": p for i, p in enumerate(probs)})
    return [(rec_id, encode(seq), prob, truth.get(rec_id, [])) for (rec_id, seq), prob in zip(records, probs,
                                                                                             strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["val", "test"], default="val")
    ap.add_argument("--grid", default='[{"short_length": null}, {}]', help="JSON list of call_genes keywords")
    ap.add_argument("--model", default="pipelines/models/bacteria-genes")
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = tracks(args.split, args.model, args.shared)
    results = []
    for params in json.loads(args.grid):
        hit = n = found = genes_n = calls_n = 0
        aurocs = []
        for _, tokens, prob, truth in data:
            genes = call_genes(tokens, prob, **params)
            valid = tokens < 4
            scores = per_position_scores(called_track(prob, genes), mask(len(tokens), truth), valid)
            hit, n = hit + scores["accuracy"] * valid.sum(), n + valid.sum()
            aurocs.append(round(scores["auroc"], 4))
            match = stop_matches([(g.start, g.end, g.strand) for g in genes], truth)
            found, genes_n, calls_n = found + match["found"], genes_n + match["genes"], calls_n + match["calls"]
        recall, precision = found / genes_n, found / calls_n
        row = {"params": params, "accuracy": round(float(hit / n), 4), "auroc": aurocs, "recall": round(recall, 4),
               "precision": round(precision, 4), "f1": round(2 * recall * precision / (recall + precision), 4)}
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "model": args.model, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
