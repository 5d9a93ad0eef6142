"""`swa-stream export-track OUT.zarr --bedgraph FILE`: per-position scores as bedGraph for genome browsers.

Runs of positions whose value rounds to the same `--precision` decimals become one line, and each
record's track is read chunk by chunk, so a chromosome-length track never has to fit in memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import zarr

from swa_stream.errors import SWAStreamError


def _runs(values: np.ndarray):
    """(start, end, value) of runs of equal values."""
    if not len(values):
        return
    edges = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(values)]])
    yield from zip(starts.tolist(), ends.tolist(), values[starts].tolist(), strict=True)


def write_bedgraph(store: str, out: str, track: str | None = None, precision: int = 3) -> int:
    try:
        group = zarr.open_group(store, mode="r")
        ids, tracks = group["records/id"][:], group.attrs.get("tracks", [])
    except (FileNotFoundError, KeyError, ValueError):
        raise SWAStreamError(f"{store}: not a finished score-fasta store") from None
    if not tracks:
        raise SWAStreamError(f"{store}: holds no per-position tracks (score with --per-position)")
    column = tracks.index(track) if track else 0
    if track and track not in tracks:
        raise SWAStreamError(f"{store}: no track {track!r} (tracks: {', '.join(tracks)})")
    lines = 0
    with open(out, "w") as f:
        f.write(f'track type=bedGraph name="{tracks[column]}" description="swa-stream {Path(store).name}"\n')
        for n, chrom in enumerate(ids):
            arr = group[f"tracks/{n}"]
            step = arr.chunks[0]
            pending = None  # a run may continue across chunk boundaries
            for lo in range(0, arr.shape[0], step):
                values = np.round(arr[lo : lo + step, column].astype(np.float64), precision)
                for start, end, value in _runs(values):
                    start, end = start + lo, end + lo
                    if pending and pending[1] == start and pending[2] == value:
                        pending = (pending[0], end, value)
                        continue
                    if pending:
                        f.write(f"{chrom}\t{pending[0]}\t{pending[1]}\t{pending[2]:.{precision}f}\n")
                        lines += 1
                    pending = (start, end, value)
            if pending:
                f.write(f"{chrom}\t{pending[0]}\t{pending[1]}\t{pending[2]:.{precision}f}\n")
                lines += 1
    return lines


def run(args) -> None:
    lines = write_bedgraph(args.store, args.bedgraph, args.track, args.precision)
    print(f"wrote {lines} bedGraph intervals to {args.bedgraph}", file=sys.stderr)
