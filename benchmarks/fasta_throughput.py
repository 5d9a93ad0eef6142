"""DNA scoring: exact streaming against the overlap-and-stitch baseline (the seed's overlapping windows),
plus the peak memory of `score-fasta` for a 2 Mbp and an 8 Mbp record.

    .venv/bin/python benchmarks/fasta_throughput.py --json docs/fasta_throughput.json

Streaming carries each layer's ring buffer across chunks and is exact. The baseline cuts the record into
windows that overlap by `overlap`, runs each window offline, and keeps every window's middle; its
per-position scores are exact only when half the overlap covers the receptive field, and it recomputes
the overlap every window.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from swa_stream.pipelines.bundles import default_model_dir, load_dna_model
from swa_stream.tasks.dna.model import DNAModel, stream_record
from swa_stream.tasks.dna.synthetic import _markov_table, background


def genome(length: int, seed: int = 0) -> np.ndarray:
    return background(1, length, np.random.default_rng(seed), _markov_table())[0].astype(np.uint8)


@torch.inference_mode()
def streamed(model: DNAModel, tokens: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    probs = stream_record(model, tokens, chunk, lambda start, p: parts.append(p))
    return probs.numpy(), np.concatenate(parts)[:, 0]


@torch.inference_mode()
def stitched(model: DNAModel, tokens: np.ndarray, window: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping windows run offline; each keeps its middle (half the overlap trimmed on each inner side)."""
    step, half, n = window - overlap, overlap // 2, len(tokens)
    track, maximum, total = np.empty(n, dtype=np.float32), None, 0.0
    for start in range(0, max(1, n - overlap), step):
        stop = min(n, start + window)
        x = torch.from_numpy(tokens[start:stop].astype(np.int64))[None]
        h = model.encode(x)
        keep_lo = 0 if start == 0 else half
        keep_hi = stop - start if stop == n else stop - start - half
        track[start + keep_lo : start + keep_hi] = torch.sigmoid(model.track_head(h))[0, keep_lo:keep_hi, 0].numpy()
        features = model._pool_features(h[:, keep_lo:keep_hi])
        maximum = features.amax(dim=1) if maximum is None else torch.maximum(maximum, features.amax(dim=1))
        total = total + features.sum(dim=1, dtype=torch.float64)
        if stop == n:
            break
    return torch.softmax(model._classify(maximum, total / n)[0], -1).numpy(), track


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def peak_rss_mb(model_dir: str, length: int, chunk: int) -> float:
    """Peak resident memory of a fresh process that runs score-fasta on one record of `length` bp."""
    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "big.fa"
        seq = "".join("ACGT"[t] for t in genome(length, seed=length))
        fasta.write_text(">big\n" + "\n".join(seq[i : i + 80] for i in range(0, length, 80)) + "\n")
        code = (
            "import resource, sys\n"
            "from swa_stream.pipelines.cli import main\n"
            f"main(['score-fasta', {str(fasta)!r}, '--out', {str(Path(tmp) / 'o.zarr')!r}, '--model', "
            f"{model_dir!r}, '--chunk-size', '{chunk}', '--per-position'])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return int(result.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(default_model_dir("dna")))
    parser.add_argument("--length", type=int, default=1_000_000, help="bp of the synthetic record")
    parser.add_argument("--chunk", type=int, default=1 << 14)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--memory", type=int, nargs=2, default=[2_000_000, 8_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--skip-memory", action="store_true", help="only time streaming against stitching")
    parser.add_argument("--json")
    args = parser.parse_args()

    model = load_dna_model(args.model)
    field = model.receptive_field()
    tokens = genome(args.length)
    t_stream, (p_stream, track_stream) = timed(streamed, model, tokens, args.chunk)
    rows = [{"method": f"exact streaming (chunk {args.chunk})", "seconds": t_stream,
             "kbp_per_s": args.length / t_stream / 1e3, "max_track_diff": 0.0, "class_prob_diff": 0.0}]
    for overlap in args.overlaps:
        t, (p, track) = timed(stitched, model, tokens, args.chunk, overlap)
        rows.append({"method": f"overlap-stitch (window {args.chunk}, overlap {overlap})", "seconds": t,
                     "kbp_per_s": args.length / t / 1e3,
                     "max_track_diff": float(np.abs(track - track_stream).max()),
                     "class_prob_diff": float(np.abs(p - p_stream).max())})
    rss = {} if args.skip_memory else {n: peak_rss_mb(args.model, n, args.chunk) for n in args.memory}

    print(f"model {args.model}: receptive field {field} positions; record {args.length:,} bp; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| method | time (s) | kbp/s | max per-position diff vs exact | class prob diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']:.2f} | {r['kbp_per_s']:.0f} | {r['max_track_diff']:.2e} | "
              f"{r['class_prob_diff']:.2e} |")
    small, large = args.memory
    if rss:
        print(f"\npeak RSS of score-fasta: {rss[small]:.0f} MB for {small:,} bp, {rss[large]:.0f} MB for "
              f"{large:,} bp: ratio {rss[large] / rss[small]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "peak_rss_mb": rss, "length": args.length}, indent=2))


if __name__ == "__main__":
    main()
