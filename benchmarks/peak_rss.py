"""Peak resident memory of the commands, and where `import torch` puts its share.

Each row is a fresh process; its peak RSS is the kernel's ru_maxrss for that child (os.wait4), the figure
`/usr/bin/time -f %M` prints. The breakdown sums /proc/self/smaps' Rss per mapping right after
`import torch`.

    .venv/bin/python benchmarks/peak_rss.py --json docs/peak_rss.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FASTA = REPO.parent / "shared" / "data" / "fasta" / "ex1.fa"
WAV = REPO / "pipelines" / "examples" / "asr_fsdd.wav"

BREAKDOWN = r"""
import collections, json, re, torch
rss, name = collections.Counter(), None
for line in open("/proc/self/smaps"):
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        fields = line.split()
        path = fields[5] if len(fields) > 5 else "[anonymous]"
        name = ("CUDA libraries (nvidia/*)" if "/nvidia/" in path else "torch/lib/*.so" if "/torch/lib/" in path
                else path if path.startswith("[") else "other files")
    elif line.startswith("Rss:"):
        rss[name] += int(line.split()[1])
print(json.dumps({k: round(v / 1024) for k, v in rss.most_common()}))
"""


def peak_mb(cmd: list[str], cwd: Path) -> tuple[int, int]:
    """(peak RSS in MB, exit status) of one fresh process."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return round(usage.ru_maxrss / 1024), proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the table keeps the smallest peak")
    args = parser.parse_args()
    py, cli = sys.executable, str(Path(sys.executable).with_name("swa-stream"))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("python -c pass", [py, "-c", "pass"]),
            ("import numpy, zarr", [py, "-c", "import numpy, zarr"]),
            ("import torch, then the interpreter's exit", [py, "-c", "import torch"]),
            ("import torch, then os._exit (the import alone)", [py, "-c", "import torch, os; os._exit(0)"]),
            ("swa-stream score-fasta ex1.fa --tsv (2 records, default model)",
             [cli, "score-fasta", str(FASTA), "--out", f"{tmp}/a.zarr", "--tsv", f"{tmp}/a.tsv"]),
            ("swa-stream score-fasta ex1.fa --per-position --rc-average",
             [cli, "score-fasta", str(FASTA), "--out", f"{tmp}/b.zarr", "--per-position", "--rc-average"]),
            ("swa-stream transcribe asr_fsdd.wav", [cli, "transcribe", str(WAV)]),
        ]
        table = []
        for label, cmd in rows:
            peaks = []
            for _ in range(args.repeat):
                for out in Path(tmp).iterdir():  # each score-fasta run starts fresh
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                mb, code = peak_mb(cmd, REPO)
                if code != 0:
                    raise SystemExit(f"{label}: exit status {code}")
                peaks.append(mb)
            table.append({"what": label, "peak_rss_mb": min(peaks), "runs_mb": peaks})
            print(f"{min(peaks):6d} MB  {label}  (runs: {peaks})", flush=True)
    breakdown = json.loads(subprocess.run([py, "-c", BREAKDOWN], capture_output=True, text=True, check=True).stdout)
    print("resident after import torch, MB:", breakdown)
    if args.json:
        import torch

        args.json.write_text(json.dumps({"torch": torch.__version__, "rows": table,
                                         "import_torch_breakdown_mb": breakdown}, indent=2) + "\n")


if __name__ == "__main__":
    main()
