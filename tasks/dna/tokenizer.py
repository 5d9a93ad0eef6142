"""Single-nucleotide tokens and a validating FASTA reader.

Tokens: A=0, C=1, G=2, T=3, N=4. Lower case (soft-masked) reads like upper case; the IUPAC ambiguity
codes R Y K M S W B D H V become N; anything else is an error that names the file, the record and the
line. Biopython's `SimpleFastaParser` does the parsing, but it validates nothing (a file without a `>`
header yields no records; any letter passes), so every check lives here.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from Bio.SeqIO.FastaIO import SimpleFastaParser

from swa_stream.errors import SWAStreamError

ALPHABET = "ACGTN"
N_TOKEN = 4
IUPAC = "RYKMSWBDHV"
INVALID = 255

_TABLE = np.full(256, INVALID, dtype=np.uint8)
for _i, _base in enumerate(ALPHABET):
    _TABLE[ord(_base)] = _TABLE[ord(_base.lower())] = _i
for _code in IUPAC:
    _TABLE[ord(_code)] = _TABLE[ord(_code.lower())] = N_TOKEN
_IS_IUPAC = np.zeros(256, dtype=bool)
_IS_IUPAC[[ord(c) for c in IUPAC + IUPAC.lower()]] = True
_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)  # A<->T, C<->G, N->N


def encode(seq: str | bytes) -> np.ndarray:
    """Tokens (uint8, len(seq)); INVALID (255) where a character is not a nucleotide or IUPAC code."""
    raw = np.frombuffer(seq.encode("latin-1") if isinstance(seq, str) else seq, dtype=np.uint8)
    return _TABLE[raw]


def reverse_complement(tokens: np.ndarray) -> np.ndarray:
    return _COMPLEMENT[tokens[::-1]]


@dataclass
class FastaRecord:
    """One validated record. `index` counts records in the file from 0, duplicates included."""

    file: str
    index: int
    id: str
    description: str
    tokens: np.ndarray  # uint8 (length,)
    n_fraction: float
    had_iupac: bool

    @property
    def length(self) -> int:
        return len(self.tokens)


def _open_text(path: Path) -> io.TextIOBase:
    """Open plain or gzip FASTA, detecting gzip by its magic bytes, not by the file name."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="ascii", newline=None)
    return open(path, encoding="ascii", newline=None)


def _bad_char_location(path: Path, record_index: int, bad: str) -> int:
    """Line number (1-based) of the first `bad` character in the record's sequence lines; error path only."""
    with _open_text(path) as handle:
        seen = -1
        for number, line in enumerate(handle, start=1):
            if line.startswith(">"):
                seen += 1
            elif seen == record_index and bad in line:
                return number
    return 0


def read_fasta(path: str | Path) -> Iterator[FastaRecord]:
    """Validated records of a FASTA file (plain or gzip). Raises SWAStreamError naming the problem."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise SWAStreamError(f"{name}: no such file")
    try:
        with _open_text(path) as handle:
            first = handle.read(1 << 16)
            if not first.strip():
                raise SWAStreamError(f"{name}: empty file, no FASTA records")
            if "\x00" in first:
                raise SWAStreamError(f"{name}: binary data, not a FASTA file")
            if not first.lstrip().startswith(">"):
                line = next(i for i, text in enumerate(first.splitlines(), 1) if text.strip())
                raise SWAStreamError(f"{name}: line {line}: expected a '>' header, not a FASTA file")
            handle.seek(0)
            for index, (title, seq) in enumerate(SimpleFastaParser(handle)):
                yield _validated(path, index, title, seq)
    except UnicodeDecodeError as err:
        raise SWAStreamError(f"{name}: binary or non-ASCII data at byte {err.start}, not a FASTA file") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise SWAStreamError(f"{name}: cannot read: {err}") from None


def _validated(path: Path, index: int, title: str, seq: str) -> FastaRecord:
    record_id = title.split(None, 1)[0] if title.strip() else ""
    raw = np.frombuffer(seq.encode("latin-1"), dtype=np.uint8)
    tokens = _TABLE[raw]
    bad = np.flatnonzero(tokens == INVALID)
    if bad.size:
        char = chr(raw[bad[0]])
        line = _bad_char_location(path, index, char)
        shown = repr(char) if char.isprintable() else f"byte 0x{ord(char):02x}"
        raise SWAStreamError(
            f"{path}: record {index + 1} ({record_id or 'no id'}), line {line}: {shown} is not a nucleotide "
            "(A, C, G, T, N or an IUPAC code)"
        )
    n_fraction = float(np.count_nonzero(tokens == N_TOKEN) / len(tokens)) if len(tokens) else 0.0
    return FastaRecord(
        file=str(path),
        index=index,
        id=record_id,
        description=title,
        tokens=tokens,
        n_fraction=n_fraction,
        had_iupac=bool(_IS_IUPAC[raw].any()),
    )
