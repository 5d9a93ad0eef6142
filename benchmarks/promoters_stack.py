"""Does the gene track help the promoter classifier? A stacking test inside the same 5-fold cross-validation.

Most of CNNProm's non-promoters are coding sequence, and the gene-track model `bacteria-genes` (trained on
other genomes' gene calls, never on promoter labels) tells coding sequence apart. For each fold this script
takes the promoter model's P(promoter) on the fold's validation and test parts (written by
`promoters_cv.py --predictions`), adds each window's mean P(coding) from bacteria-genes (both strands,
exactly as `score-fasta --rc-average`), fits a two-feature logistic regression (the two logits) on the
fold's validation part only, and scores the test fifth at 0.5, as `promoters_cv.py` scores the model alone.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/promoters_cv.py --predictions runs/prom_stack
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/promoters_stack.py --predictions runs/prom_stack \
        --json docs/promoters_stack.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from swa_stream.pipelines.bundles import load_dna_model
from swa_stream.tasks.dna.data import DNADataModule
from swa_stream.tasks.dna.track import stream_both_strands

sys.path.insert(0, str(Path(__file__).resolve().parent))
from promoters_cv import summarise  # noqa: E402  (the same Sn / Sp / MCC / AUROC as the model alone)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Weights (bias first) of a logistic regression by Newton's method, with a small ridge."""
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-a @ w))
        grad = a.T @ (p - y) + l2 * w
        hess = a.T @ (a * (p * (1 - p))[:, None]) + l2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w


def coding(model, examples) -> np.ndarray:
    """Each window's mean P(coding) over both strands."""
    with torch.no_grad():
        return np.array([float(stream_both_strands(model, ex.tokens).mean()) for ex in examples])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/ecoli_promoters.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/ecoli_promoters"))
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--gene-model", default="bacteria-genes")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load(Path(args.config).read_text())
    data_args = {k: v for k, v in config["data"]["init_args"].items() if k != "root"}
    genes = load_dna_model(args.gene_model).eval()
    rows = []
    for k in range(args.folds):
        saved = np.load(args.predictions / f"fold{k}.npz")
        dm = DNADataModule(root=str(args.data / f"fold{k}"), **data_args)
        dm.setup()
        val_c, test_c = coding(genes, dm._splits["val"]), coding(genes, dm._splits["test"])
        assert (np.array([e.label for e in dm._splits["test"]]) == saved["test_y"]).all(), "splits out of order"
        w = fit_logistic(np.stack([logit(saved["val_p"]), logit(val_c)], 1), saved["val_y"].astype(np.float64))
        z = w[0] + w[1] * logit(saved["test_p"]) + w[2] * logit(test_c)
        stacked = (1 / (1 + np.exp(-z))).astype(np.float32)
        y = saved["test_y"]
        row = {"fold": k, "alone": summarise(saved["test_p"], y), "coding_only_auroc": summarise(-test_c, y)["auroc"],
               "stacked": summarise(stacked, y), "weights": [float(v) for v in w]}
        rows.append(row)
        a, s = row["alone"], row["stacked"]
        print(f"fold {k}: alone Sn {a['sn']:.3f} Sp {a['sp']:.3f} AUROC {a['auroc']:.3f} | stacked Sn {s['sn']:.3f} "
              f"Sp {s['sp']:.3f} AUROC {s['auroc']:.3f} | P(coding) alone AUROC {row['coding_only_auroc']:.3f}",
              flush=True)
    print("| | Sn | Sp | accuracy | MCC | AUROC |\n|---|---|---|---|---|---|")
    result = {"gene_model": args.gene_model, "folds": rows}
    for name in ("alone", "stacked"):
        mean = {m: float(np.mean([r[name][m] for r in rows])) for m in ("sn", "sp", "acc", "mcc", "auroc")}
        std = {m: float(np.std([r[name][m] for r in rows])) for m in ("sn", "sp", "acc", "mcc", "auroc")}
        result[name] = {"mean": mean, "std": std}
        print(f"| {name} | " + " | ".join(f"{mean[m]:.3f} ± {std[m]:.3f}" for m in mean) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
