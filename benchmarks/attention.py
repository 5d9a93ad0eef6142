"""Sliding-window attention on CPU: our blocked kernel ("torch" backend) against compiled FlexAttention and
dense SDPA with a boolean band mask, forward and forward + backward.

    .venv/bin/python benchmarks/attention.py --json docs/attention.json
    .venv/bin/python benchmarks/attention.py --quick            # one small configuration, a smoke run

Windows are causal and given in keys: W keys means window=(W - 1, 0). Shapes are (1, heads, N, dim).
Times are medians of --repeats steady-state runs; "first call" is the first run in this process (for
FlexAttention it includes building the block mask and torch.compile; we reset dynamo's in-memory cache
before every configuration, but Inductor's on-disk cache may still make later runs faster).

Peak memory is the growth of the process's resident set during one run: we return freed heap to the OS
(malloc_trim), reset the kernel's high-water mark (writing 5 to /proc/self/clear_refs, Linux only) and
report VmHWM minus VmRSS before the run. It counts every byte torch touches (outputs, saved tensors,
gradients, workspaces) but not memory that was already resident, such as the inputs.
FlexAttention has no backward on CPU (it raises), so its forward + backward columns stay empty.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import re
import statistics
import time

import torch
import torch.nn.functional as F

from swa_stream.kernels import sliding_window_attention

MiB = 2**20


def resident_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) * 1024


def peak_memory(fn) -> float | None:
    """MiB by which one call of fn raises the resident set above its level before the call; None off Linux."""
    try:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = resident_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        fn()
        return (resident_bytes("VmHWM") - before) / MiB
    except OSError:
        return None


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(forward, inputs: list[torch.Tensor], repeats: int, backward: bool) -> dict:
    """First-call and median steady-state seconds, and peak MiB, of forward (and backward) on inputs."""
    grad_out = torch.randn_like(inputs[0])
    if not backward:  # FlexAttention refuses CPU inputs that require grad, even under no_grad
        inputs = [x.detach() for x in inputs]

    def run():
        for x in inputs:
            x.grad = None
        with torch.set_grad_enabled(backward):
            out = forward(*inputs)
            if backward:
                out.backward(grad_out)

    first = timed(run)
    steady = statistics.median(timed(run) for _ in range(repeats))
    return {"first_s": first, "median_s": steady, "peak_mib": peak_memory(run)}


def ours(window):
    return lambda q, k, v: sliding_window_attention(q, k, v, window, backend="torch")


def dense(n: int, window):
    """SDPA over all N x N scores, the band given as a boolean mask (built once, outside the timing)."""
    i = torch.arange(n)
    band = (i[None, :] >= i[:, None] - window[0]) & (i[None, :] <= i[:, None] + window[1])
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=band)


def flex(n: int, window):
    """Compiled FlexAttention with a block mask; building the mask is part of the first call."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    left, right = window
    compiled = torch.compile(flex_attention)
    make_mask = torch.compile(create_block_mask)  # uncompiled, it materializes all N x N mask entries
    state = {}

    def sliding(b, h, q_idx, kv_idx):
        return (kv_idx >= q_idx - left) & (kv_idx <= q_idx + right)

    def attend(q, k, v):
        if "mask" not in state:
            state["mask"] = make_mask(sliding, None, None, n, n, device="cpu")
        return compiled(q, k, v, block_mask=state["mask"])

    return attend


def run_config(n: int, keys: int, args) -> list[dict]:
    window = (keys - 1, 0)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, args.heads, n, args.dim, generator=gen).requires_grad_() for _ in range(3)]
    dense_bytes = n * n * (1 + inputs[0].element_size())  # boolean mask + SDPA's additive float copy
    methods = {"ours": ours(window)}
    if not args.no_flex:
        torch._dynamo.reset()
        methods["flex"] = flex(n, window)
    if dense_bytes <= args.dense_cap_gib * 2**30:
        methods["dense"] = dense(n, window)
    rows = []
    for name, forward in methods.items():
        row = {"n": n, "keys": keys, "method": name, "fwd": measure(forward, inputs, args.repeats, backward=False)}
        row["fwd_bwd"] = None if name == "flex" else measure(forward, inputs, args.repeats, backward=True)
        rows.append(row)
        print(f"  {name}: N={n} keys={keys} done", flush=True)
    return rows


def cell(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| N | keys | method | first call s | fwd ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB | fwd / ours |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    ours_fwd = {(r["n"], r["keys"]): r["fwd"]["median_s"] for r in rows if r["method"] == "ours"}
    for r in rows:
        fwd, both = r["fwd"], r["fwd_bwd"] or {"median_s": None, "peak_mib": None}
        both_ms = None if both["median_s"] is None else both["median_s"] * 1e3
        cells = [
            r["n"],
            r["keys"],
            r["method"],
            cell(fwd["first_s"], ".2f"),
            cell(fwd["median_s"] * 1e3, ".1f"),
            cell(both_ms, ".1f"),
            cell(fwd["peak_mib"], ".0f"),
            cell(both["peak_mib"], ".0f"),
            cell(fwd["median_s"] / ours_fwd[(r["n"], r["keys"])], ".2f") + "x",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Time and peak memory of the forward pass against N, log-log, one line per method and window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ours": "-", "flex": "--", "dense": ":"}
    for (method, keys) in sorted({(r["method"], r["keys"]) for r in rows}):
        pts = sorted((r["n"], r["fwd"]) for r in rows if r["method"] == method and r["keys"] == keys)
        label = f"{method}, {keys} keys"
        ax_t.plot([n for n, _ in pts], [f["median_s"] * 1e3 for _, f in pts], styles[method], marker="o", label=label)
        ax_m.plot([n for n, _ in pts], [max(f["peak_mib"], 0.5) for _, f in pts], styles[method], marker="o",
                  label=label)
    for ax, title in ((ax_t, "forward time (ms)"), (ax_m, "forward peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    ax_m.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536], help="sequence lengths N")
    parser.add_argument("--windows", type=int, nargs="+", default=[128, 512, 2048], help="keys per row (causal)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--dense-cap-gib", type=float, default=4.0, help="skip dense SDPA when its mask exceeds")
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile takes seconds)")
    parser.add_argument("--quick", action="store_true", help="one small configuration, two repeats")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="draw time and memory against N (log-log) into this PNG")
    parser.add_argument("--from-json", help="skip measuring: print and plot the rows of an earlier --json")
    args = parser.parse_args()
    if args.from_json:
        rows = json.loads(open(args.from_json).read())["rows"]
        print(markdown(rows))
        if args.plot:
            plot(rows, args.plot)
        return
    if args.quick:
        args.sizes, args.windows, args.repeats = [1024], [128], 2
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for n in args.sizes:
        for keys in args.windows:
            rows += run_config(n, keys, args)
    print(markdown(rows))
    if args.json:
        meta = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "heads": args.heads,
            "dim": args.dim,
            "repeats": args.repeats,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
