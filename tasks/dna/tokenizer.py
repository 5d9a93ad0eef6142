"""Single-nucleotide tokens, input streams detected by content, and a validating FASTA reader.

Tokens: A=0, C=1, G=2, T=3, N=4. Lower case (soft-masked) reads like upper case; the IUPAC ambiguity
codes R Y K M S W B D H V become N; with `rna=True`, U reads as T. Anything else is an error that names
the file, the record, the line and the byte offset (in the decompressed stream).

Inputs are read once, front to back, so a FIFO, /dev/stdin or `<(...)` works like a file. gzip, bzip2
and xz are recognised by their magic bytes, never by the file name. The parser is our own rather than
Biopython's `SimpleFastaParser`: that one validates nothing, skips a header indented by a space, and
cannot tell where in the file a bad byte was.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swa_stream.errors import SWAStreamError, stdin_at_most_once

ALPHABET = "ACGTN"
N_TOKEN = 4
IUPAC = "RYKMSWBDHV"
INVALID = 255
WHITESPACE = b" \t\r\n\v\f"
AMINO_ONLY = b"EFILPQXZJOefilpqxzjo*"  # one-letter amino acid codes (and the stop) that no nucleotide code uses
VALIDATE_BYTES = 1 << 20  # sequence lines are validated in blocks of this size, so errors keep their line

_TABLE = np.full(256, INVALID, dtype=np.uint8)
for _i, _base in enumerate(ALPHABET):
    _TABLE[ord(_base)] = _TABLE[ord(_base.lower())] = _i
for _code in IUPAC:
    _TABLE[ord(_code)] = _TABLE[ord(_code.lower())] = N_TOKEN
_RNA_TABLE = _TABLE.copy()
_RNA_TABLE[[ord("U"), ord("u")]] = 3
_IS_IUPAC = np.zeros(256, dtype=bool)
_IS_IUPAC[[ord(c) for c in IUPAC + IUPAC.lower()]] = True
_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)  # A<->T, C<->G, N->N

MAGIC = {b"\x1f\x8b": ("gzip", lambda f: gzip.GzipFile(fileobj=f)), b"BZh": ("bzip2", bz2.BZ2File),
         b"\xfd7zXZ\x00": ("xz", lzma.LZMAFile)}
FINGERPRINT_BYTES = 1 << 20


def table(rna: bool = False) -> np.ndarray:
    return _RNA_TABLE if rna else _TABLE


def encode(seq: str | bytes, rna: bool = False) -> np.ndarray:
    """Tokens (uint8, len(seq)); INVALID (255) where a character is not a nucleotide or IUPAC code."""
    raw = np.frombuffer(seq.encode("latin-1") if isinstance(seq, str) else seq, dtype=np.uint8)
    return table(rna)[raw]


_LETTERS = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)


def decode(tokens: np.ndarray) -> str:
    """The bases of tokens as text, `encode`'s inverse up to IUPAC codes (A, C, G, T; N for N and IUPAC)."""
    return _LETTERS[tokens].tobytes().decode()


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

    def content_hash(self) -> str:
        """A short hash of the header and the tokens: resume checks a record is the one scored before."""
        digest = hashlib.blake2b(self.description.encode("utf-8", "surrogateescape"), digest_size=8)
        digest.update(self.tokens.tobytes())
        return digest.hexdigest()


def n_fraction(tokens: np.ndarray) -> float:
    """The share of N among the tokens (0 for none)."""
    return float(np.count_nonzero(tokens == N_TOKEN) / len(tokens)) if len(tokens) else 0.0


def make_record(file: str, index: int, title: str, tokens: np.ndarray, raw_iupac: bool) -> FastaRecord:
    record_id = title.split(None, 1)[0] if title.strip() else ""
    return FastaRecord(file, index, record_id, title, tokens, n_fraction(tokens), raw_iupac)


def has_iupac(raw: bytes | np.ndarray) -> bool:
    return bool(_IS_IUPAC[np.frombuffer(raw, np.uint8) if isinstance(raw, bytes) else raw].any())


def decode_header(raw: bytes) -> str:
    """Header text: UTF-8 where it is, other bytes kept visibly as \\xNN escapes rather than rejected."""
    return raw.decode("utf-8", "backslashreplace").strip()


# ---- opening -------------------------------------------------------------------------------------
class _Prefixed(io.RawIOBase):
    """The bytes already read to sniff the format, then the rest of the stream: a pipe cannot seek back."""

    def __init__(self, prefix: bytes, rest):
        self.prefix, self.rest = prefix, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n], self.prefix = self.prefix[:n], self.prefix[n:]
            return n
        return self.rest.readinto(buffer)

    def close(self) -> None:
        self.rest.close()
        super().close()


STDIN_PATH = Path("/dev/stdin")  # what an input named "-" reads


def check_input(path: str | Path) -> Path:
    """A readable input: a regular file or a stream (FIFO, /dev/stdin, <(...)); never a directory. "-" is
    standard input (a pipe, or a file redirected to it), refused when it is a terminal: nothing would come."""
    if str(path) == "-":
        if sys.stdin is None or not os.path.exists(STDIN_PATH):
            raise SWAStreamError("-: standard input is not open (nothing is connected to it)")
        if os.isatty(0):
            raise SWAStreamError("-: standard input is a terminal; pipe sequences in, e.g. "
                                 "zcat genome.fa.gz | swa-stream score-fasta - --out scores.zarr")
        path = STDIN_PATH
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SWAStreamError(f"{path}: no such file") from None
    except OSError as err:
        raise SWAStreamError(f"{path}: cannot read: {err.strerror}") from None
    if stat.S_ISDIR(mode):
        raise SWAStreamError(f"{path}: is a directory, not a sequence file")
    if stat.S_ISREG(mode) and not os.access(path, os.R_OK):
        raise SWAStreamError(f"{path}: permission denied")
    return path


def check_inputs(paths) -> list[Path]:
    """`check_input` for each, and "-" at most once: standard input can be read only once."""
    stdin_at_most_once(paths)
    return [check_input(p) for p in paths]


def is_stream(path: Path) -> bool:
    return not stat.S_ISREG(os.stat(path).st_mode)


def fingerprint(path: Path) -> str:
    """Size plus a hash of the first and last MiB: cheap, and it changes when an edit keeps size and mtime.
    A stream cannot be read twice, so it has none (resume then checks each record's content hash)."""
    if is_stream(path):
        return "stream"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.blake2b(f.read(FINGERPRINT_BYTES), digest_size=16)
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(f.read())
    return f"{size}:{digest.hexdigest()}"


def open_binary(path: str | Path) -> tuple[io.BufferedIOBase, str]:
    """(the decompressed byte stream, the compression's name or "") of a file or stream, read once."""
    path = check_input(path)
    try:
        raw = open(path, "rb", buffering=0)
    except OSError as err:
        raise SWAStreamError(f"{path}: cannot read: {err.strerror}") from None
    prefix = b""
    while len(prefix) < 6 and (more := raw.read(6 - len(prefix))):
        prefix += more
    stream = io.BufferedReader(_Prefixed(prefix, raw), 1 << 20)
    for magic, (name, opener) in MAGIC.items():
        if prefix.startswith(magic):
            return io.BufferedReader(opener(stream), 1 << 20), name
    return stream, ""


class Lines:
    """(line number from 1, byte offset of the line, the line's bytes) of a byte stream."""

    def __init__(self, stream):
        self.stream = stream

    def __iter__(self):
        offset = 0
        for number, line in enumerate(self.stream, start=1):
            yield number, offset, line
            offset += len(line)


# ---- sequence lines --------------------------------------------------------------------------------
def _locate(lines: list[tuple[int, int, bytes]], position: int) -> tuple[int, int, int]:
    """(line number, byte offset, byte) of the `position`-th non-whitespace byte among `lines`."""
    for number, offset, line in lines:
        for column, byte in enumerate(line):
            if byte in WHITESPACE:
                continue
            if position == 0:
                return number, offset + column, byte
            position -= 1
    raise AssertionError("position past the lines")


def describe_byte(byte: int) -> str:
    if byte == 0:
        return "binary data (byte 0x00)"
    return repr(chr(byte)) if 32 < byte < 127 else f"byte 0x{byte:02x}"


class SequenceBuilder:
    """Collects a record's sequence lines and validates them block by block, remembering where each came from."""

    def __init__(self, name: str, rna: bool):
        self.name, self.table, self.rna = name, table(rna), rna
        self.block: list[tuple[int, int, bytes]] = []
        self.block_bytes = 0
        self.parts: list[np.ndarray] = []
        self.iupac = False

    def add(self, number: int, offset: int, line: bytes, where: str) -> None:
        self.block.append((number, offset, line))
        self.block_bytes += len(line)
        if self.block_bytes >= VALIDATE_BYTES:
            self._validate(where)

    def _validate(self, where: str) -> None:
        raw = np.frombuffer(b"".join(line for _, _, line in self.block).translate(None, WHITESPACE), np.uint8)
        tokens = self.table[raw]
        bad = np.flatnonzero(tokens == INVALID)
        if bad.size:
            number, offset, byte = _locate(self.block, int(bad[0]))
            hint = "; RNA? pass --rna" if byte in b"Uu" and not self.rna else ""
            if byte in AMINO_ONLY:  # letters that are amino acids and no nucleotide code
                hint = "; a protein sequence? this reads DNA (or RNA with --rna), not amino acids"
            raise SWAStreamError(
                f"{self.name}: {where}, line {number}, byte {offset:,}: {describe_byte(byte)} is not a nucleotide "
                f"(A, C, G, T, N or an IUPAC code){hint}"
            )
        self.iupac = self.iupac or bool(_IS_IUPAC[raw].any())
        self.parts.append(tokens)
        self.block, self.block_bytes = [], 0

    def finish(self, where: str) -> tuple[np.ndarray, bool]:
        self._validate(where)
        tokens = self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts or [np.zeros(0, np.uint8)])
        return tokens, self.iupac


def record_label(index: int, record_id: str) -> str:
    return f"record {index + 1} ({record_id or 'no id'})"


def parse_fasta(name: str, lines, rna: bool = False) -> Iterator[FastaRecord]:
    """Records of FASTA lines (from `Lines`). Text before the first header is an error."""
    index, title, builder = -1, None, None
    for number, offset, line in lines:
        stripped = line.lstrip()
        if stripped.startswith(b">"):
            if builder is not None:
                yield _finish(name, index, title, builder)
            index, title = index + 1, decode_header(stripped[1:])
            builder = SequenceBuilder(name, rna)
        elif builder is None:
            if stripped:
                raise SWAStreamError(f"{name}: line {number}: expected a '>' header, not a FASTA file")
        elif stripped:
            builder.add(number, offset, line, record_label(index, title.split(None, 1)[0] if title else ""))
    if builder is not None:
        yield _finish(name, index, title, builder)


def _finish(name: str, index: int, title: str, builder: SequenceBuilder) -> FastaRecord:
    tokens, iupac = builder.finish(record_label(index, title.split(None, 1)[0] if title else ""))
    return make_record(name, index, title, tokens, iupac)


def read_fasta(path: str | Path, rna: bool = False) -> Iterator[FastaRecord]:
    """Validated records of a FASTA file or stream (plain, gzip, bzip2 or xz). Errors are SWAStreamError.

    FASTQ and CSV/TSV are read by `swa_stream.tasks.dna.formats.read_sequences`, which detects the format."""
    from swa_stream.tasks.dna.formats import read_sequences

    yield from read_sequences(path, rna=rna, formats=("fasta",))
