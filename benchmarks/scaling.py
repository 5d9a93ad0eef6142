"""How cost grows with sequence length: the core's attention path and the whole encoder, offline and
streamed. Linear cost means 8x the length costs about 8x the time (the core's bar is at most 11x).

    .venv/bin/python benchmarks/scaling.py --json docs/scaling.json

Prints a markdown table and writes JSON. Times are medians of --repeats runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from swa_stream import SWAConfig, SWAEncoder, sliding_window_attention


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def attention_time(n: int, window: tuple[int, int], repeats: int) -> float:
    q, k, v = (torch.randn(1, 4, n, 64) for _ in range(3))
    return median_time(lambda: sliding_window_attention(q, k, v, window), repeats)


@torch.no_grad()
def encoder_times(cfg: SWAConfig, n: int, chunk: int, repeats: int) -> tuple[float, float]:
    enc = SWAEncoder(cfg).eval()
    x = torch.randn(1, n, cfg.d_model)

    def streamed():
        state = enc.init_state(1)
        for part in x.split(chunk, dim=1):
            _, state = enc.step(part, state)
        enc.flush(state)

    return median_time(lambda: enc(x), repeats), median_time(streamed, max(1, repeats // 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    parser.add_argument("--window", type=int, nargs=2, default=[255, 0], metavar=("LEFT", "RIGHT"))
    parser.add_argument("--chunk", type=int, default=160, help="chunk length for the streamed runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    window = tuple(args.window)
    cfg = SWAConfig(d_model=256, n_heads=4, n_layers=4, window=window)
    rows = []
    for n in args.sizes:
        attn = attention_time(n, window, args.repeats)
        offline, streamed = encoder_times(cfg, n, args.chunk, args.repeats)
        rows.append({"n": n, "attention_s": attn, "encoder_offline_s": offline, "encoder_streamed_s": streamed})

    base = rows[0]
    print(f"window={window}, attention B=1 H=4 D=64 float32; encoder {cfg.n_layers} layers d_model "
          f"{cfg.d_model}; streamed in chunks of {args.chunk}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}\n")
    print("| N | attention (ms) | x time vs first N | encoder offline (ms) | x | encoder streamed (ms) | x |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['attention_s'] * 1e3:.1f} | {r['attention_s'] / base['attention_s']:.2f} | "
            f"{r['encoder_offline_s'] * 1e3:.1f} | {r['encoder_offline_s'] / base['encoder_offline_s']:.2f} | "
            f"{r['encoder_streamed_s'] * 1e3:.1f} | {r['encoder_streamed_s'] / base['encoder_streamed_s']:.2f} |"
        )
    print(f"\nlength x{rows[-1]['n'] / base['n']:.0f}: attention time x"
          f"{rows[-1]['attention_s'] / base['attention_s']:.2f}, encoder offline x"
          f"{rows[-1]['encoder_offline_s'] / base['encoder_offline_s']:.2f}, streamed x"
          f"{rows[-1]['encoder_streamed_s'] / base['encoder_streamed_s']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"window": window, "chunk": args.chunk, "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
