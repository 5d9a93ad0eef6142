"""The largest difference between streaming and offline outputs over random encoders and chunkings.

    .venv/bin/python benchmarks/streaming_error.py --cases 300

Each case draws 1-3 layers, per-layer or shared windows (left 0-12, right 0-4), batch 1-2, length 1-70
and a random chunking (chunks of 1-40), then compares cat(step outputs + flush) with forward in float32.
The tests bound the error at 1e-5; this reports what it actually is.
"""

from __future__ import annotations

import argparse
import random

import torch

from swa_stream import SWAConfig, SWAEncoder


@torch.no_grad()
def case_error(rng: random.Random, seed: int) -> tuple[float, tuple]:
    n_layers = rng.randint(1, 3)
    windows = [(rng.randint(0, 12), rng.randint(0, 4)) for _ in range(n_layers)]
    window = windows if rng.random() < 0.5 else windows[0]
    torch.manual_seed(seed)
    enc = SWAEncoder(SWAConfig(d_model=16, n_heads=2, n_layers=n_layers, window=window)).eval()
    batch, length = rng.randint(1, 2), rng.randint(1, 70)
    x = torch.randn(batch, length, 16)
    sizes = []
    while sum(sizes) < length:
        sizes.append(min(length - sum(sizes), rng.randint(1, 40)))
    state, outs = enc.init_state(batch), []
    for part in x.split(sizes, dim=1):
        out, state = enc.step(part, state)
        outs.append(out)
    error = (torch.cat(outs + [enc.flush(state)], dim=1) - enc(x)).abs().max().item()
    return error, (window, batch, length, sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    worst, where = max(case_error(rng, i) for i in range(args.cases))
    print(f"{args.cases} random cases: largest |streamed - offline| = {worst:.3e} (window, B, T, chunks) = {where}")


if __name__ == "__main__":
    main()
