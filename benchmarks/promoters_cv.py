"""5-fold cross-validation of the promoter recipe (configs/ecoli_promoters.yaml) on CNNProm's E. coli set.

Each fold trains the config's model on its training part, keeps the weights of the epoch with the best
validation MCC, and scores its test fifth, which took no part in that fold's training or selection.
Sensitivity and specificity are at the argmax of the two classes, as CNNProm reports them (Sn 0.90,
Sp 0.96). Prints a table and writes JSON.

    python -m swa_stream.tasks.dna.promoters --shared ../shared/data --out data/ecoli_promoters
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/promoters_cv.py --json docs/promoters_cv.json

`--only 0 1 2` runs some folds (two processes can share the work; each fold is seeded by its number, so the
results are the same), and `--predictions DIR` keeps each fold's validation and test P(promoter) for
benchmarks/promoters_stack.py; `--rescore DIR` prints the table again from such a folder, without training.
"Sn at Sp 0.96" is the sensitivity where each test fold's own specificity reaches CNNProm's 0.96.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from torchmetrics.functional.classification import binary_auroc

from swa_stream.config import SWAConfig
from swa_stream.tasks.dna.data import DNADataModule, collate
from swa_stream.tasks.dna.module import GenomicsTask


class KeepBest(L.Callback):
    """Remembers the weights of the epoch with the best value of `monitor`."""

    def __init__(self, monitor: str):
        self.monitor, self.best, self.state, self.epoch = monitor, -float("inf"), None, -1

    def on_validation_epoch_end(self, trainer, module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking and float(value) > self.best:
            self.best, self.epoch = float(value), trainer.current_epoch
            self.state = copy.deepcopy(module.state_dict())


@torch.no_grad()
def scores(task: GenomicsTask, dm: DNADataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    task.eval()
    probs, labels = [], []
    examples = dm._splits[split]
    for i in range(0, len(examples), 256):
        batch = collate(examples[i : i + 256])
        logits, _ = task.model(batch["tokens"], batch["lengths"])
        probs.append(logits.softmax(-1)[:, 1].numpy())
        labels.append(batch["labels"].numpy())
    return np.concatenate(probs), np.concatenate(labels)


def sn_at_sp(p: np.ndarray, y: np.ndarray, sp: float = 0.96) -> float:
    """Sensitivity at the threshold where the specificity on these very scores reaches `sp`: a point of the
    ROC curve (a ranking figure, like AUROC), not an operating threshold anyone could have chosen beforehand."""
    negatives = np.sort(p[y == 0])
    if not len(negatives) or not (y == 1).any():
        return float("nan")
    threshold = negatives[int(np.ceil(sp * len(negatives))) - 1]
    return float((p[y == 1] > threshold).mean())


def summarise(p: np.ndarray, y: np.ndarray) -> dict:
    pred = p > 0.5
    tp, tn = int((pred & (y == 1)).sum()), int((~pred & (y == 0)).sum())
    fp, fn = int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    mcc_den = np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))) or 1.0
    return {
        "n": len(y), "sn": tp / max(1, tp + fn), "sp": tn / max(1, tn + fp), "acc": (tp + tn) / len(y),
        "mcc": (tp * tn - fp * fn) / mcc_den,
        "auroc": float(binary_auroc(torch.from_numpy(p), torch.from_numpy(y).long())),
        "sn_at_sp96": sn_at_sp(p, y),
    }


def run_fold(config: dict, root: Path, seed: int, predictions: Path | None = None) -> dict:
    L.seed_everything(seed, verbose=False)
    init = copy.deepcopy(config["model"]["init_args"])
    encoder = SWAConfig(**init.pop("encoder"))
    data_args = {k: v for k, v in config["data"]["init_args"].items() if k != "root"}
    dm = DNADataModule(root=str(root), **data_args)
    dm.setup()
    task = GenomicsTask(encoder=encoder, labels=dm.labels, **init)
    keep = KeepBest("val/mcc")
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=config["trainer"]["max_epochs"],
        gradient_clip_val=config["trainer"].get("gradient_clip_val"), logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[keep],
    )
    start = time.perf_counter()
    trainer.fit(task, dm)
    task.load_state_dict(keep.state)
    test = scores(task, dm, "test")
    result = summarise(*test)
    if predictions is not None:  # each split's P(promoter) and label, in the split's order, for stacking
        val = scores(task, dm, "val")
        np.savez(predictions, val_p=val[0], val_y=val[1], test_p=test[0], test_y=test[1])
    result.update(best_epoch=keep.epoch, seconds=round(time.perf_counter() - start, 1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/ecoli_promoters.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/ecoli_promoters"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", type=int, nargs="*", help="run just these folds (e.g. to split the work)")
    parser.add_argument("--predictions", type=Path, help="a folder for each fold's val/test P(promoter) (.npz)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rescore", type=Path, metavar="DIR", help="a --predictions folder: its table, no training")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load(Path(args.config).read_text())
    rows = []
    if args.predictions:
        args.predictions.mkdir(parents=True, exist_ok=True)
    for k in range(args.folds) if args.only is None else args.only:
        if args.rescore:
            saved = np.load(args.rescore / f"fold{k}.npz")
            rows.append(summarise(saved["test_p"], saved["test_y"]))
        else:
            where = args.predictions / f"fold{k}.npz" if args.predictions else None
            rows.append(run_fold(config, args.data / f"fold{k}", seed=k, predictions=where))
        r = rows[-1]
        print(f"fold {k}: Sn {r['sn']:.3f}  Sp {r['sp']:.3f}  acc {r['acc']:.3f}  MCC {r['mcc']:.3f}  "
              f"AUROC {r['auroc']:.3f}  Sn at Sp 0.96 {r['sn_at_sp96']:.3f}"
              + ("" if args.rescore else f"  (best epoch {r['best_epoch']}, {r['seconds']} s)"), flush=True)
    metrics = ("sn", "sp", "acc", "mcc", "auroc", "sn_at_sp96")
    mean = {m: float(np.mean([r[m] for r in rows])) for m in metrics}
    std = {m: float(np.std([r[m] for r in rows])) for m in metrics}
    print("| | Sn | Sp | accuracy | MCC | AUROC | Sn at Sp 0.96 |\n|---|---|---|---|---|---|---|")
    print("| ours, 5-fold mean ± sd | " + " | ".join(f"{mean[m]:.3f} ± {std[m]:.3f}" for m in mean) + " |")
    print("| CNNProm (published, cross-validation) | 0.90 | 0.96 | | | | |")
    if args.json:
        result = {"config": args.config, "data": str(args.data), "folds": rows, "mean": mean, "std": std}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
