"""score-fasta on many short records: wall time, records/s, bp/s, files written and peak RSS, beside one
long record of the same model, so short records can be seen to score at the speed of long ones.

    .venv/bin/python benchmarks/many_records.py --records 1000000 --length 100 --per-position

Each run is a fresh `swa-stream score-fasta` process under /usr/bin/time (peak RSS is its maximum resident
set size). The default model is a tiny random bundle made here (d_model 16, 2 layers): it measures the
I/O path (parsing, batching, logs, the ragged store) rather than the network; `--model DIR` takes any
bundle. `--kill-at F` kills the many-records run with SIGKILL once a fraction F of the records is logged,
reruns the same command, and checks the resumed TSV against an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]


def write_records(path: Path, records: int, length: int, seed: int = 0) -> None:
    """`records` random records of `length` bp, written in vectorised blocks."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ACGT", np.uint8)
    with open(path, "wb") as f:
        for lo in range(0, records, 100_000):
            n = min(100_000, records - lo)
            seqs = alphabet[rng.integers(0, 4, (n, length))]
            lines = np.concatenate([seqs, np.full((n, 1), ord("\n"), np.uint8)], axis=1)
            f.write(b"".join(b">r%d\n" % (lo + i) + lines[i].tobytes() for i in range(n)))


def tiny_model(path: Path) -> str:
    import torch

    from swa_stream import SWAConfig
    from swa_stream.bundle import save_bundle
    from swa_stream.tasks.dna.model import DNAModel

    torch.manual_seed(0)
    model = DNAModel(SWAConfig(d_model=16, n_heads=2, n_layers=2, window=(8, 8)), ["a", "b"])
    save_bundle(path, model, "dna", {"encoder": model.cfg.to_dict(), "classes": model.classes, "tracks": model.tracks})
    return str(path)


def timed_run(argv: list[str]) -> dict:
    """Run swa-stream under /usr/bin/time; (seconds, peak RSS MB)."""
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M", *CLI, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"score-fasta failed:\n{result.stderr[-3000:]}")
    rss = int(result.stderr.rsplit("maxrss_kb=", 1)[1].split()[0]) / 1024
    return {"seconds": seconds, "rss_mb": rss, "stdout": result.stdout.strip()}


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def kill_and_resume(argv: list[str], out: Path, records: int, fraction: float) -> float:
    """Kill -9 once `fraction` of the records is logged, rerun; seconds of the rerun."""
    proc = subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = Path(f"{out}.partial") / "log.0"
    while proc.poll() is None and (log.read_bytes().count(b"\n") if log.exists() else 0) < fraction * records:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = log.read_bytes().count(b"\n")
    started = time.perf_counter()
    subprocess.run([*CLI, *argv], check=True, capture_output=True)
    print(f"killed after {logged:,} of {records:,} records were logged; the rerun took "
          f"{time.perf_counter() - started:.1f} s")
    return logged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--length", type=int, default=100, help="bp per short record")
    parser.add_argument("--long", type=int, default=2_000_000, help="bp of the one-record reference run")
    parser.add_argument("--model", help="bundle (default: a tiny random one, to measure the I/O path)")
    parser.add_argument("--per-position", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kill-at", type=float, help="also kill -9 at this fraction and check the resume")
    parser.add_argument("--tmp", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "model")
        many, long = tmp / "many.fa", tmp / "long.fa"
        write_records(many, args.records, args.length)
        write_records(long, 1, args.long, seed=1)
        common = ["--model", model, "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        common += ["--per-position"] if args.per_position else []
        rows = []
        for name, fasta, records, bp in (("many short", many, args.records, args.records * args.length),
                                         ("one long", long, 1, args.long)):
            out = tmp / f"{name.replace(' ', '_')}.zarr"
            run = timed_run(["score-fasta", str(fasta), "--out", str(out), "--tsv", f"{out}.tsv", *common])
            rows.append((name, records, bp, run, count_files(out)))
        print(f"model {'tiny random (d_model 16, 2 layers)' if not args.model else args.model}; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; --threads {args.threads}, "
              f"--batch-size {args.batch_size}{', --per-position' if args.per_position else ''}\n")
        print("| input | records | bp | wall time (s) | records/s | kbp/s | files in OUT.zarr | peak RSS (MB) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, records, bp, run, files in rows:
            print(f"| {name} | {records:,} | {bp:,} | {run['seconds']:.1f} | {records / run['seconds']:,.0f} | "
                  f"{bp / run['seconds'] / 1e3:,.0f} | {files} | {run['rss_mb']:.0f} |")
        if args.kill_at:
            out = tmp / "resumed.zarr"
            argv = ["score-fasta", str(many), "--out", str(out), "--tsv", f"{out}.tsv", *common]
            kill_and_resume(argv, out, args.records, args.kill_at)
            same = Path(f"{out}.tsv").read_text() == (tmp / "many_short.zarr.tsv").read_text()
            print(f"resumed TSV identical to the uninterrupted run's: {same}")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
