"""`swa-stream export-track OUT.zarr --bedgraph FILE --bigwig FILE`: per-position scores for genome browsers.

Runs of positions whose value rounds to the same `--precision` decimals become one interval; N
positions (NaN in the store) are skipped, so masked regions show as gaps. Tracks are read sequentially in
bounded pieces, so neither a chromosome nor a million short records has to fit in memory. bigWig is
written with pyBigWig, its chromosome sizes taken from the store's record lengths. Both outputs go
through a temp file and a rename; the summary goes to stdout. `--bedgraph -` writes the bedGraph to stdout
(for a pipe: `| gzip`, `| bedGraphToBigWig`), and the summary then goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from swa_stream.errors import SWAStreamError
from swa_stream.pipelines.fasta_store import Store
from swa_stream.pipelines.safe_output import (
    atomic_path,
    atomic_text,
    check_output_file,
    first_line,
    is_stdout,
    os_problem,
)

BIGWIG_MAGIC = (0x888FFC26).to_bytes(4, "little")
MAX_PRECISION = 9


def value_runs(values: np.ndarray):
    """(start, end, value) of runs of equal, non-NaN values."""
    if not len(values):
        return
    nan = np.isnan(values)
    change = (values[1:] != values[:-1]) & ~(nan[1:] & nan[:-1])
    edges = np.flatnonzero(change) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(values)]])
    keep = ~nan[starts]
    yield from zip(starts[keep].tolist(), ends[keep].tolist(), values[starts[keep]].tolist(), strict=True)


def intervals(store: Store, column: int, precision: int, rows: int = 1 << 20):
    """(record number, start, end, value) runs over every record, merged across read boundaries."""
    pending = None
    for n, lo, block in store.blocks(column, rows):
        values = np.round(block.astype(np.float64), precision)
        for start, end, value in value_runs(values):
            start, end = start + lo, end + lo
            if pending and pending[0] == n and pending[2] == start and pending[3] == value:
                pending = (n, pending[1], end, value)
                continue
            if pending:
                yield pending
            pending = (n, start, end, value)
    if pending:
        yield pending


def _column(store: Store, track: str | None) -> int:
    if not store.tracks:
        raise SWAStreamError(f"{store.path}: holds no per-position tracks (score with --per-position)")
    if track is not None and track not in store.tracks:
        raise SWAStreamError(f"{store.path}: no track {track!r} (tracks: {', '.join(store.tracks)})")
    return store.tracks.index(track) if track else 0


def check_precision(precision: int) -> None:
    if not 0 <= precision <= MAX_PRECISION:
        raise SWAStreamError(f"--precision: must be 0 to {MAX_PRECISION} decimals, got {precision}")


def write_bedgraph(store: str, out: str, track: str | None = None, precision: int = 3) -> int:
    check_precision(precision)
    opened = Store(store)
    column = _column(opened, track)
    target = _check_bedgraph(out, opened)
    lines = 0
    with atomic_text(target) as f:
        f.write(f'track type=bedGraph name="{opened.tracks[column]}" description="swa-stream {opened.path.name}"\n')
        for n, start, end, value in intervals(opened, column, precision):
            f.write(f"{opened.ids[n]}\t{start}\t{end}\t{value:.{precision}f}\n")
            lines += 1
    return lines


def write_bigwig(store: str, out: str, track: str | None = None, precision: int = 3) -> tuple[int, int]:
    """(intervals, chromosomes) written to a bigWig file."""
    import pyBigWig

    check_precision(precision)
    opened = Store(store)
    column = _column(opened, track)
    target = check_output_file(out, "--bigwig", [opened.path], [], _is_bigwig, "bigWig file")
    chroms = [(name, int(length)) for name, length in zip(opened.ids, opened.lengths, strict=True) if length]
    seen: set[str] = set()
    for name, _ in chroms:
        if name in seen:
            raise SWAStreamError(f"{opened.path}: record id {name!r} occurs twice; bigWig needs unique "
                                 "chromosome names (bedGraph does not)")
        seen.add(name)
    count = 0
    with atomic_path(target) as tmp:
        bw = pyBigWig.open(str(tmp), "w")
        if bw is None:
            raise os_problem(target, OSError(0, "pyBigWig could not create the file"))
        try:
            bw.addHeader(chroms)
            batch: list[tuple[int, int, int, float]] = []
            for item in intervals(opened, column, precision):
                if batch and batch[-1][0] != item[0]:
                    count += _add(bw, opened, batch)
                batch.append(item)
            count += _add(bw, opened, batch)
        finally:
            bw.close()
    return count, len(chroms)


def _add(bw, store: Store, batch: list) -> int:
    if not batch:
        return 0
    name = store.ids[batch[0][0]]
    bw.addEntries([name] * len(batch), [b[1] for b in batch], ends=[b[2] for b in batch],
                  values=[float(b[3]) for b in batch])
    count = len(batch)
    batch.clear()
    return count


def _check_bedgraph(out: str, store: Store) -> Path:
    """--bedgraph's path, checked: stdout ("-"), or a file that is no input and no one else's bedGraph."""
    return check_output_file(out, "--bedgraph", [store.path], [], is_bedgraph, "bedGraph file that swa-stream wrote",
                             stdout=True)


def is_bedgraph(path: Path) -> bool:
    """A bedGraph file swa-stream wrote (its track line says so): only those are replaced, never a user's own."""
    line = first_line(path)
    return line.startswith(b"track type=bedGraph") and b' description="swa-stream ' in line


def _is_bigwig(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == BIGWIG_MAGIC


def run(args) -> None:
    bedgraph, bigwig = getattr(args, "bedgraph", None), getattr(args, "bigwig", None)
    if bedgraph is None and bigwig is None:
        raise SWAStreamError(f"{args.store}: give --bedgraph FILE and/or --bigwig FILE")
    check_precision(args.precision)
    if bedgraph is not None and bigwig is not None and not is_stdout(bigwig) and \
            Path(bedgraph).resolve() == Path(bigwig).resolve():
        raise SWAStreamError(f"{bedgraph}: --bedgraph and --bigwig name the same file")
    store = Store(args.store)  # both outputs are checked before either is written
    if bedgraph is not None:
        _check_bedgraph(bedgraph, store)
    if bigwig is not None:
        check_output_file(bigwig, "--bigwig", [store.path], [], _is_bigwig, "bigWig file")
    said = sys.stderr if is_stdout(bedgraph) else sys.stdout  # `--bedgraph -`: stdout holds the track
    if bedgraph is not None:
        lines = write_bedgraph(args.store, bedgraph, args.track, args.precision)
        print(f"wrote {lines} bedGraph intervals to {'stdout' if is_stdout(bedgraph) else bedgraph}", file=said)
    if bigwig is not None:
        count, chroms = write_bigwig(args.store, bigwig, args.track, args.precision)
        print(f"wrote {count} bigWig intervals over {chroms} chromosomes to {bigwig}", file=said)
