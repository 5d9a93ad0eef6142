"""Attention without autograd on the CPU: the flash kernel against batched products, the two forms of
`kernels/cpu.py` `_inference`, on the blocks and slabs of the shipped models' layers.

    .venv/bin/python benchmarks/slab_inference.py --json docs/slab_inference.json

Each configuration is (2 rows, 4 heads, N queries, D) with its cached keys before them, as a streaming step
of 16,384 positions over both strands presents them. The two forms run in alternation, --rounds times, and
each time is the median of --repeats calls; the table gives the medians over rounds and their ratio.
`products_pay` (which form runs by default) was set from this table.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import torch

from swa_stream.kernels import cpu

# (queries, window, head dim, where it comes from)
CONFIGS = [
    (16384, (32, 32), 16, "bacteria-genes layers 1-2 (full rate)"),
    (4096, (32, 32), 16, "bacteria-genes layers 3-4 (1/4 rate)"),
    (1024, (64, 64), 16, "bacteria-genes layers 5-6 (1/16 rate)"),
    (16384, (16, 16), 16, "dna-demo"),
    (4096, (128, 0), 64, "a causal window of 129 keys, D 64"),
    (4096, (256, 256), 32, "a wide centred window, D 32"),
]


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    print("| threads | layer | N | window | D | slab keys | kernel (ms) | products (ms) | products / kernel |")
    print("|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for n, window, dim, what in CONFIGS:
            gen = torch.Generator().manual_seed(n)
            cached = sum(window)
            q = torch.randn(2, 4, n, dim, generator=gen)
            k, v = (torch.randn(2, 4, n + cached, dim, generator=gen) for _ in "kv")
            g = cpu._geometry(n, n + cached, window, window[0], 0, None, None)
            scale = dim**-0.5
            times = {True: [], False: []}
            with torch.inference_mode():
                for _ in range(args.rounds):
                    for products in (False, True):
                        run = functools.partial(cpu._inference, q, k, v, g, scale, products)
                        times[products].append(median_time(run, args.repeats))
            kernel, products = (statistics.median(times[p]) * 1e3 for p in (False, True))
            row = dict(threads=threads, layer=what, n=n, window=list(window), dim=dim, span=g.span,
                       kernel_ms=round(kernel, 2), products_ms=round(products, 2), ratio=round(products / kernel, 3),
                       default="products" if cpu.products_pay(g) else "kernel")
            rows.append(row)
            print(f"| {threads} | {what} | {n} | {window} | {dim} | {g.span} | {kernel:.1f} | {products:.1f} | "
                  f"{products / kernel:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rounds": args.rounds, "repeats": args.repeats, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
