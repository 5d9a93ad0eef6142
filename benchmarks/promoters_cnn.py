"""CNNProm's architecture, trained here on the same five folds as benchmarks/promoters_cv.py: the anchor's
model under our protocol, so that its published figures (Sn 0.90, Sp 0.96) can be told apart from what the
protocol allows.

The network follows Umarov & Solovyev 2017 for E. coli: one-hot 81 bp, a convolution of 200 filters of
width 21, ReLU, max pooling by 2, a dense layer of 128 with dropout 0.5, two outputs. Each fold trains for
30 epochs (Adam, lr 1e-3, batch 32) on its training part, keeps the epoch with the best validation MCC,
and scores its test fifth; Sn and Sp are at the argmax, as in promoters_cv.py.

    python -m swa_stream.tasks.dna.promoters --shared ../shared/data --out data/ecoli_promoters
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/promoters_cnn.py --json docs/promoters_cnn.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from promoters_cv import summarise
from torch import nn

from swa_stream.tasks.dna.tokenizer import read_fasta


def load(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot (N, 4, 81) and labels (1 = promoter) of a fold's split."""
    labels = dict(line.split("\t")[:2] for line in (folder / f"{split}.labels.tsv").read_text().splitlines()[1:])
    records = list(read_fasta(folder / f"{split}.fa"))
    x = np.zeros((len(records), 4, 81), np.float32)
    for i, rec in enumerate(records):
        tokens = rec.tokens[:81]
        ok = tokens < 4
        x[i, tokens[ok], np.flatnonzero(ok)] = 1.0
    y = np.array([labels[rec.id] == "promoter" for rec in records], np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def cnnprom() -> nn.Module:
    return nn.Sequential(nn.Conv1d(4, 200, 21), nn.ReLU(), nn.MaxPool1d(2), nn.Dropout(0.5), nn.Flatten(),
                         nn.Linear(200 * 30, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 2))


def run_fold(folder: Path, seed: int, epochs: int = 30) -> dict:
    torch.manual_seed(seed)
    (xt, yt), (xv, yv), (xs, ys) = (load(folder, s) for s in ("train", "val", "test"))
    net = cnnprom()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    best, state, best_epoch = -2.0, None, -1
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(yt))
        for i in range(0, len(yt), 32):
            batch = order[i : i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[batch]), yt[batch]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            mcc = summarise(net(xv).softmax(-1)[:, 1].numpy(), yv.numpy())["mcc"]
        if mcc > best:
            best, best_epoch, state = mcc, epoch, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        result = summarise(net(xs).softmax(-1)[:, 1].numpy(), ys.numpy())
    return {**{k: float(v) for k, v in result.items()}, "best_epoch": best_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/ecoli_promoters"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for k in range(args.folds):
        rows.append(run_fold(args.data / f"fold{k}", seed=k))
        r = rows[-1]
        print(f"fold {k}: Sn {r['sn']:.3f}  Sp {r['sp']:.3f}  MCC {r['mcc']:.3f}  AUROC {r['auroc']:.3f}", flush=True)
    metrics = ("sn", "sp", "acc", "mcc", "auroc")
    mean = {m: float(np.mean([r[m] for r in rows])) for m in metrics}
    std = {m: float(np.std([r[m] for r in rows])) for m in metrics}
    print("| CNNProm's architecture, 5-fold mean ± sd | " + " | ".join(f"{mean[m]:.3f} ± {std[m]:.3f}" for m in mean)
          + " |")
    if args.json:
        args.json.write_text(json.dumps({"folds": rows, "mean": mean, "std": std}, indent=2) + "\n")


if __name__ == "__main__":
    main()
