"""Training memory of an ASR recipe, per second of audio in a batch, so that a GPU batch can be sized before
renting the GPU.

    .venv/bin/python benchmarks/asr_train_memory.py --config configs/asr_librispeech.yaml \
        --json docs/asr_train_memory.json

Each measurement runs in a fresh process: build the recipe's model, make one batch of `--utterance`-second
utterances (noise, with transcripts of a realistic length), then run one training step (forward with
SpecAugment, CTC loss, backward), in float32 or under bf16 autocast (`--trainer.precision bf16-mixed` on a
GPU autocasts the same operations). The figure is the peak resident memory of the step above the same
process just before it (`ru_maxrss`; a CPU proxy for the GPU's allocator peak, which is what a batch must
fit under). Activations of sliding-window attention grow linearly with the batch's audio, so the per-second
slope of the measured batches extrapolates to the recipe's `max_batch_seconds`. Weights, gradients and AdamW's
two moments add 16 bytes per parameter.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import yaml


def one_step(config: Path, seconds: float, utterance: float, precision: str) -> dict:
    """In this process: the peak resident memory (MB) that one training step adds."""
    import torch

    from swa_stream.tasks.asr.module import ASRTask
    from swa_stream.tasks.asr.text import VOCABULARY, encode

    torch.manual_seed(0)
    torch.set_num_threads(1)
    init = yaml.safe_load(config.read_text())["model"]["init_args"]
    init = {k: v for k, v in init.items() if k not in ("init_from", "training_data")}
    task = ASRTask(labels=list(VOCABULARY), **init).train()
    n = max(1, round(seconds / utterance))
    samples = int(utterance * task.model.sample_rate)
    text = "the quick brown fox jumps over the lazy dog " * max(1, int(utterance * 15 / 44))  # ~15 chars/s
    targets = torch.tensor(encode(text.strip(), task.model.labels))
    batch = {
        "audio": torch.randn(n, samples) * 0.05,
        "lengths": torch.full((n,), samples),
        "targets": targets.expand(n, -1).clone(),
        "target_lengths": torch.full((n,), len(targets)),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        loss, _, _ = task._loss(batch, augment=True)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in task.parameters())
    return {"batch_seconds": n * utterance, "utterances": n, "precision": precision, "step_mb": peak - before,
            "params": params}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=Path("configs/asr_librispeech.yaml"))
    p.add_argument("--seconds", type=float, nargs="*", default=[30.0, 60.0, 120.0], help="batch sizes (audio s)")
    p.add_argument("--utterance", type=float, default=15.0, help="length of each utterance (s)")
    p.add_argument("--precision", nargs="*", default=["32-true", "bf16-mixed"])
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one", nargs=2, metavar=("SECONDS", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_step(args.config, float(args.one[0]), args.utterance, args.one[1])))
        return
    cfg = yaml.safe_load(args.config.read_text())
    target = cfg.get("data", {}).get("init_args", {}).get("max_batch_seconds")
    rows = []
    for precision in args.precision:
        for seconds in args.seconds:
            out = subprocess.run([sys.executable, __file__, "--config", str(args.config), "--utterance",
                                  str(args.utterance), "--one", str(seconds), precision],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{precision:>10}  batch {r['batch_seconds']:6.0f} s ({r['utterances']} x {args.utterance:g} s): "
                  f"step adds {r['step_mb']:8.0f} MB")
    result = {"config": str(args.config), "utterance_s": args.utterance, "rows": rows,
              "max_batch_seconds": target, "params": rows[0]["params"] if rows else None, "fits": {}}
    for precision in args.precision:
        mine = [r for r in rows if r["precision"] == precision]
        if len(mine) >= 2:
            a, b = mine[0], mine[-1]
            slope = (b["step_mb"] - a["step_mb"]) / (b["batch_seconds"] - a["batch_seconds"])
            fixed = 16 * result["params"] / 2**20  # weights, gradients, AdamW's two moments
            at = None if target is None else fixed + a["step_mb"] + slope * (target - a["batch_seconds"])
            result["fits"][precision] = {"mb_per_audio_second": slope, "weights_grads_adam_mb": fixed,
                                         "at_max_batch_seconds_mb": at}
            line = f"{precision:>10}: {slope:.1f} MB per second of audio in the batch"
            if at is not None:
                line += f"; at max_batch_seconds={target:g}: about {at / 1024:.1f} GB with weights and AdamW"
            print(line)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
