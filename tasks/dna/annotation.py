"""Per-position truth from annotations: GFF3 features or BED intervals -> a 0/1 mask per record.

GFF3 coordinates are 1-based and inclusive; BED's are 0-based and half-open. Both become half-open
`(start, end, strand)` intervals here, so a mask is `mask[start:end] = 1`. Pseudogenes (`pseudo=true`)
are not protein-coding and are left out unless asked for.
"""

from __future__ import annotations

import gzip
from collections import defaultdict
from pathlib import Path

import numpy as np

from swa_stream.errors import SWAStreamError

Interval = tuple[int, int, str]  # (start, end) half-open, strand "+", "-" or "."


def _open_text(path: Path):
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_gff3(path: str | Path, feature: str = "CDS", include_pseudo: bool = False) -> dict[str, list[Interval]]:
    """seqid -> intervals of every `feature` row (column 3) of a GFF3 file (gzip allowed)."""
    out: dict[str, list[Interval]] = defaultdict(list)
    for seqid, interval, _ in gff3_features(path, feature, include_pseudo):
        out[seqid].append(interval)
    return dict(out)


def gff3_features(path: str | Path, feature: str = "CDS", include_pseudo: bool = False):
    """(seqid, interval, attributes dict) for every `feature` row of a GFF3 file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise SWAStreamError(f"{path}: no such annotation file")
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.startswith("##FASTA"):
                break
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 9:
                raise SWAStreamError(f"{path}: line {number}: a GFF3 row has 9 tab-separated columns, got {len(cols)}")
            if cols[2] != feature:
                continue
            if not include_pseudo and "pseudo=true" in cols[8].lower():
                continue
            try:
                start, end = int(cols[3]) - 1, int(cols[4])
            except ValueError:
                raise SWAStreamError(f"{path}: line {number}: start and end must be integers") from None
            if start < 0 or end < start:
                raise SWAStreamError(f"{path}: line {number}: bad interval {cols[3]}..{cols[4]}")
            attrs = dict(kv.split("=", 1) for kv in cols[8].split(";") if "=" in kv)
            yield cols[0], (start, end, cols[6] if cols[6] in "+-" else "."), attrs


def read_bed(path: str | Path) -> dict[str, list[Interval]]:
    """chrom -> intervals of a BED file (3 to 12 columns; strand from column 6 where present)."""
    path = Path(path)
    out: dict[str, list[Interval]] = defaultdict(list)
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\n").split("\t")
            try:
                start, end = int(cols[1]), int(cols[2])
            except (IndexError, ValueError):
                raise SWAStreamError(f"{path}: line {number}: expected chrom<TAB>start<TAB>end") from None
            strand = cols[5] if len(cols) > 5 and cols[5] in "+-" else "."
            out[cols[0]].append((start, end, strand))
    return dict(out)


def mask(length: int, intervals: list[Interval], strand: str | None = None) -> np.ndarray:
    """uint8 (length,): 1 where an interval covers the position. `strand` "+" or "-" keeps only that
    strand's intervals (unstranded ones count for both); None keeps all."""
    out = np.zeros(length, dtype=np.uint8)
    for start, end, s in intervals:
        if strand is None or s in (strand, "."):
            out[max(0, start) : min(length, end)] = 1
    return out


def write_bed(path: str | Path, records: dict[str, list[Interval]]) -> None:
    with open(path, "w") as out:
        for name, intervals in records.items():
            for start, end, strand in sorted(intervals):
                out.write(f"{name}\t{start}\t{end}\t.\t0\t{strand}\n")
