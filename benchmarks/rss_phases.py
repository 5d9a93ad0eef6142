"""Where score-fasta's memory goes on many short records: peak VmRSS while scoring and while finalising.

    .venv/bin/python benchmarks/rss_phases.py --records 300000

Runs one `swa-stream score-fasta --per-position --threads 1` process on `--records` random records of
`--length` bp with the tiny random bundle of benchmarks/many_records.py, polls its VmRSS every 0.2 s, and
counts a sample as "finalising" once the run has started writing store.zarr (or finished it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from many_records import tiny_model, write_records


def rss_mb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--length", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, fasta, out = tiny_model(tmp / "model"), tmp / "many.fa", tmp / "out.zarr"
        write_records(fasta, args.records, args.length)
        proc = subprocess.Popen([sys.executable, "-m", "swa_stream.pipelines.cli", "score-fasta", str(fasta),
                                 "--out", str(out), "--tsv", f"{out}.tsv", "--model", model, "--per-position",
                                 "--threads", "1"], stderr=subprocess.DEVNULL)
        peaks = {"scoring": 0, "finalising": 0}
        store = out.with_name(out.name + ".partial") / "store.zarr"
        while proc.poll() is None:
            rss = rss_mb(proc.pid)
            if rss is not None:
                phase = "finalising" if store.exists() or out.exists() else "scoring"
                peaks[phase] = max(peaks[phase], rss)
            time.sleep(0.2)
        if proc.returncode:
            sys.exit(f"score-fasta exited {proc.returncode}")
    print(f"{args.records:,} records of {args.length} bp: peak VmRSS {peaks['scoring']} MB while scoring, "
          f"{peaks['finalising']} MB while finalising")


if __name__ == "__main__":
    main()
