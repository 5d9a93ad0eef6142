"""F.linear (then F.gelu) against oneDNN's fused linear (kernels/linear.py) at the DNA model's shapes, on one
thread without autograd: where the fused call pays, which sets FUSED_LINEAR_OUTPUTS and FUSED_GELU_OUTPUTS.

    .venv/bin/python benchmarks/fused_linear.py --json docs/fused_linear.json

Each figure is the median of `--repeats` timings of `--calls` calls; the two forms alternate, so that a
machine whose speed drifts moves both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from swa_stream.encoder import aten_gelu
from swa_stream.kernels import linear as fused
from swa_stream.pipelines.allocator import keep_freed_memory

SHAPES = [(64, 192), (64, 64), (64, 128), (128, 64)]  # bacteria-genes: qkv, out, the ffn's two products


def plain_linear(x, w, b):
    return F.linear(x, w, b)


def plain_gelu(x, w, b):
    return aten_gelu(F.linear(x, w, b))


def fast_linear(x, w, b):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def fast_gelu(x, w, b):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")


def timed(fn, calls: int, *args) -> float:
    fn(*args)
    began = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - began) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1024,2048,4096,16384")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    keep_freed_memory()  # as score-fasta runs (pipelines/allocator.py)
    torch.set_num_threads(1)
    rows_out = []
    print("rows  in -> out  gelu   F.linear ms   fused ms   ratio")
    with torch.inference_mode():
        for rows in (int(r) for r in args.rows.split(",")):
            for n_in, n_out in SHAPES:
                x = torch.randn(rows, n_in)
                w = (torch.randn(n_out, n_in) * n_in**-0.5).t().contiguous().t()  # column-major, as the model's
                b = torch.randn(n_out)
                for gelu in (False, True) if n_out == 128 else (False,):
                    plain, fast = (plain_gelu, fast_gelu) if gelu else (plain_linear, fast_linear)
                    pairs = [(timed(plain, args.calls, x, w, b), timed(fast, args.calls, x, w, b))
                             for _ in range(args.repeats)]
                    a, f = statistics.median(p for p, _ in pairs), statistics.median(q for _, q in pairs)
                    rows_out.append(dict(rows=rows, n_in=n_in, n_out=n_out, gelu=gelu, linear_ms=round(a, 4),
                                         fused_ms=round(f, 4), ratio=round(f / a, 3),
                                         fused_used=fused.fused_linear(x, w, b, gelu) is not None))
                    print(f"{rows:5d} {n_in:3d} -> {n_out:3d}  {'gelu' if gelu else '    '}  {a:10.3f}  {f:9.3f}"
                          f"   {f / a:.2f}{'  (fused above the threshold)' if rows_out[-1]['fused_used'] else ''}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, threads=1, rows=rows_out,
                           fused_linear_outputs=fused.FUSED_LINEAR_OUTPUTS,
                           fused_gelu_outputs=fused.FUSED_GELU_OUTPUTS), f, indent=1)


if __name__ == "__main__":
    main()
