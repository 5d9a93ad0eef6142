"""The sequence formats users bring, detected by content: FASTA, FASTQ, and CSV/TSV tables.

- FASTA: `>` headers (see tokenizer.parse_fasta).
- FASTQ: `@` headers, sequence lines, a `+` line, then as many quality characters as bases (qualities
  can start with `@`, so they are counted, not pattern-matched). Qualities are ignored.
- GenBank (`LOCUS`, as NCBI's .gbff and Prokka's .gbk) and EMBL (`ID`, as ENA's): the sequence between
  `ORIGIN` (`SQ`) and `//`, position numbers dropped; the id is the accession.version, as NCBI's FASTA
  headers have it, and the title adds the definition. Features are not read. An NCBI release file
  (`gbbct1.seq`: a "Genetic Sequence Data Bank" title page before the first LOCUS) is read from its first
  LOCUS line.
- CSV/TSV (`seq,label` as Genomic Benchmarks circulate): the delimiter is the first line's tab or comma.
  The first row is a header if a cell is a known column name (seq, sequence, dna, id, name, label, ...)
  or no cell is a valid sequence. The sequence column is
  `column` (a header name, or a 1-based number), else a header named seq/sequence, else the first
  column whose first value is a sequence. An `id`/`name` column names records (else `row<N>`), and the
  other cells (labels) are kept in the description as `name=value`.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import lzma
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from swa_stream.errors import SWAStreamError
from swa_stream.tasks.dna.tokenizer import (
    INVALID,
    FastaRecord,
    Lines,
    SequenceBuilder,
    decode_header,
    describe_byte,
    has_iupac,
    make_record,
    open_binary,
    parse_fasta,
    record_label,
    table,
)

SEQ_NAMES = ("seq", "sequence", "sequences", "dna", "rna")
ID_NAMES = ("id", "name", "record", "seq_id", "sequence_id")
FORMATS = ("fasta", "fastq", "genbank", "embl", "table")
_RELEASE = re.compile(rb"\S+\.SEQ\s+Genetic Sequence Data Bank")  # line 1 of an NCBI release file (GBBCT1.SEQ)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def read_sequences(
    path: str | Path,
    rna: bool = False,
    column: str | None = None,
    formats: tuple[str, ...] = FORMATS,
    notice: Callable[[str], None] = _say,
) -> Iterator[FastaRecord]:
    """Validated records of any supported format, compressed or not, file or stream."""
    name = str(path)
    try:
        stream, _ = open_binary(path)
        with stream:
            lines = iter(Lines(stream))
            first = next(((n, o, line) for n, o, line in lines if line.strip()), None)
            if first is None:
                raise SWAStreamError(f"{name}: empty file, no sequence records")
            if _RELEASE.match(first[2]) and "genbank" in formats:  # a release's title page: skip to its records
                first = next(((n, o, line) for n, o, line in lines if line.startswith(b"LOCUS ")), None)
                if first is None:
                    raise SWAStreamError(f"{name}: a GenBank release file with no LOCUS record")
            lines = itertools.chain([first], lines)
            kind = _detect(name, first[0], first[2], formats)
            if kind == "fasta":
                yield from parse_fasta(name, lines, rna)
            elif kind == "fastq":
                notice(f"{name}: FASTQ: base qualities are ignored")
                yield from parse_fastq(name, lines, rna)
            elif kind in ("genbank", "embl"):
                yield from parse_flatfile(name, lines, rna, kind)
            else:
                yield from parse_table(name, lines, rna, column)
    except (OSError, EOFError, gzip.BadGzipFile, lzma.LZMAError) as err:
        raise SWAStreamError(f"{name}: cannot read: {getattr(err, 'strerror', None) or err}") from None


def _detect(name: str, number: int, line: bytes, formats: tuple[str, ...]) -> str:
    start = line.lstrip()[:1]
    if start == b">" and "fasta" in formats:
        return "fasta"
    if start == b"@" and "fastq" in formats:
        return "fastq"
    for kind, opening in (("genbank", b"LOCUS "), ("embl", b"ID   ")):
        if line.startswith(opening) and kind in formats:
            return kind
    try:
        line.decode("utf-8")
        binary = b"\x00" in line or any(b < 9 or 13 < b < 32 for b in line[:64])
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise SWAStreamError(f"{name}: binary data, not a sequence file")
    if (b"\t" in line or b"," in line) and "table" in formats:
        return "table"
    wanted = {"fasta": "a '>' header", "fastq": "a FASTQ '@' header", "genbank": "a GenBank LOCUS line",
              "embl": "an EMBL ID line", "table": "a CSV/TSV table"}
    raise SWAStreamError(f"{name}: line {number}: expected {' or '.join(wanted[f] for f in formats)}, "
                         f"not a {'FASTA' if formats == ('fasta',) else 'sequence'} file")


def parse_fastq(name: str, lines, rna: bool = False) -> Iterator[FastaRecord]:
    lines = iter(lines)
    index = -1
    for number, offset, line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith(b"@"):
            raise SWAStreamError(f"{name}: line {number}: expected a FASTQ '@' header")
        index += 1
        title = decode_header(stripped[1:])
        where = record_label(index, title.split(None, 1)[0] if title else "")
        builder, bases = SequenceBuilder(name, rna), 0
        for number, offset, line in lines:
            if line.startswith(b"+"):
                break
            builder.add(number, offset, line, where)
            bases += len(line.strip())
        else:
            raise SWAStreamError(f"{name}: {where}: ends before its '+' line (a truncated FASTQ file?)")
        quality = 0
        while quality < bases:
            number, offset, line = next(lines, (number, offset, None))
            if line is None:
                raise SWAStreamError(f"{name}: {where}: {quality} quality characters for {bases} bases "
                                     "(a truncated FASTQ file?)")
            quality += len(line.strip())
        if quality != bases:
            raise SWAStreamError(f"{name}: {where}, line {number}: {quality} quality characters for {bases} bases")
        tokens, iupac = builder.finish(where)
        yield make_record(name, index, title, tokens, iupac)


_NUMBERS = bytes.maketrans(b"0123456789", b" " * 10)  # a flat file's position numbers, blanked in place
# where the sequence starts, the keywords of the id, and of the title; a continuation line starts with spaces
_FLAT = {"genbank": (b"ORIGIN", b"LOCUS", b"ACCESSION", b"VERSION", b"DEFINITION"),
         "embl": (b"SQ", b"ID", b"AC", b"SV", b"DE")}


def _flat_keyword(line: bytes, kind: str) -> tuple[bytes, bytes]:
    """(keyword, value) of a header line; (b"", text) for a GenBank continuation line (leading spaces)."""
    if kind == "embl":
        return line[:2], line[5:].strip()
    if line[:1] in b" \t":
        return b"", line.strip()
    parts = line.split(None, 1)
    return parts[0], parts[1].strip() if len(parts) > 1 else b""


def _flat_id(kind: str, fields: dict[bytes, list[bytes]]) -> str:
    """GenBank: VERSION's accession.version, else ACCESSION, else the LOCUS name (Prokka leaves ACCESSION and
    VERSION empty, and its .fna names records by LOCUS too). EMBL: the ID line's accession and sequence
    version (`ID   X56734; SV 1; ...` is X56734.1); in the older layout (`ID   TRBG361 standard; ...`) the
    SV line's accession.version, else the first AC accession, else the entry name."""
    def first(key: bytes) -> bytes:  # the first word of the first non-empty line of `key`
        return next((v.replace(b";", b" ").split()[0] for v in fields.get(key, []) if v.replace(b";", b" ").split()),
                    b"")

    if kind == "genbank":
        return decode_header(first(b"VERSION") or first(b"ACCESSION") or first(b"LOCUS"))
    cells = [c.strip() for c in b" ".join(fields.get(b"ID", [b""])).split(b";")]
    version = next((c[2:].strip() for c in cells[1:] if c.startswith(b"SV")), b"")
    if version and cells[0]:
        return decode_header(cells[0].split()[0] + b"." + version)
    return decode_header(first(b"SV") or first(b"AC") or first(b"ID"))


def parse_flatfile(name: str, lines, rna: bool, kind: str) -> Iterator[FastaRecord]:
    """GenBank or EMBL records: header lines until ORIGIN (SQ), then the sequence until `//`. Only the
    lines that name the record are kept (not the features, which can be megabytes)."""
    sequence_key, opening, *_, title_key = _FLAT[kind]
    wanted = {k for k in _FLAT[kind][1:] if k}
    index, fields, last, builder, where = -1, None, b"", None, ""
    for number, offset, line in lines:
        if builder is not None:  # inside the sequence
            if line.startswith(b"//"):
                tokens, iupac = builder.finish(where)
                record_id = _flat_id(kind, fields)
                title = " ".join(filter(None, [record_id, decode_header(b" ".join(fields.get(title_key, [])))]))
                yield make_record(name, index, title, tokens, iupac)
                fields, builder = None, None
            elif line.strip():
                builder.add(number, offset, line.translate(_NUMBERS), where)
            continue
        if not line.strip():
            continue
        key, value = _flat_keyword(line, kind)
        if fields is None:
            if key != opening:
                expected = "a GenBank LOCUS line" if kind == "genbank" else "an EMBL ID line"
                raise SWAStreamError(f"{name}: line {number}: expected {expected} (a record starts there)")
            index, fields = index + 1, {}
        if key == b"//":
            raise SWAStreamError(f"{name}: {record_label(index, _flat_id(kind, fields))}, line {number}: the "
                                 f"record ends with no sequence (no {sequence_key.decode()} section): a CON or WGS "
                                 "master record lists contigs; get the records with their sequence")
        if key == sequence_key:
            where = record_label(index, _flat_id(kind, fields))
            builder = SequenceBuilder(name, rna)
            continue
        key = key or last  # a GenBank continuation line belongs to the keyword above it
        if key in wanted:
            fields.setdefault(key, []).append(value)
        last = key
    if fields is not None:
        raise SWAStreamError(f"{name}: {record_label(index, _flat_id(kind, fields))}: ends before its '//' line "
                             "(a truncated file?)")


def _is_sequence(cell: str, rna: bool) -> bool:
    raw = cell.strip().encode("utf-8", "replace")
    return bool(raw) and not (table(rna)[np.frombuffer(raw, np.uint8)] == INVALID).any()


def _choose_column(name: str, header: list[str] | None, row: list[str], column: str | None, rna: bool) -> int:
    names = [h.strip().lower() for h in header] if header else []
    if column is not None:
        if column.isdigit() and 1 <= int(column) <= len(row):
            return int(column) - 1
        if column.strip().lower() in names:
            return names.index(column.strip().lower())
        known = f" (columns: {', '.join(header)})" if header else f" ({len(row)} columns, no header)"
        raise SWAStreamError(f"{name}: no column {column!r}{known}")
    for wanted in SEQ_NAMES:
        if wanted in names:
            return names.index(wanted)
    for i, cell in enumerate(row):
        if _is_sequence(cell, rna):
            return i
    raise SWAStreamError(f"{name}: no column of sequences found; choose one with --column")


def parse_table(name: str, lines, rna: bool = False, column: str | None = None) -> Iterator[FastaRecord]:
    text = (line.decode("utf-8", "backslashreplace") for _, _, line in lines)
    first = next(text)
    delimiter = "\t" if "\t" in first else ","
    reader = csv.reader(itertools.chain([first], text), delimiter=delimiter)
    rows = ((reader.line_num, row) for row in reader if any(cell.strip() for cell in row))
    number, row = next(rows)
    names = {cell.strip().lower() for cell in row}
    has_header = (not any(_is_sequence(cell, rna) for cell in row)  # "dna" and "na" are also sequences
                  or bool(names & {*SEQ_NAMES, *ID_NAMES, "label", "labels", "class"})
                  or (column is not None and not column.isdigit()))
    header = row if has_header else None
    if has_header:
        number, row = next(rows, (number, None))
        if row is None:
            return
    first_number, first_row = number, row
    seq_col = _choose_column(name, header, row, column, rna)
    lower = [h.strip().lower() for h in header] if header else []
    id_col = next((lower.index(n) for n in ID_NAMES if n in lower), None)
    labels = [i for i in range(len(lower)) if i not in (seq_col, id_col)]
    codes = table(rna)
    index = -1
    for number, row in itertools.chain([(first_number, first_row)], rows):
        index += 1
        if seq_col >= len(row):
            raise SWAStreamError(f"{name}: line {number}: {len(row)} columns, no column {seq_col + 1}")
        raw = row[seq_col].strip().encode("utf-8", "surrogateescape")
        tokens = codes[np.frombuffer(raw, np.uint8)]
        bad = np.flatnonzero(tokens == INVALID)
        if bad.size:
            raise SWAStreamError(f"{name}: line {number}, column {seq_col + 1}: {describe_byte(raw[bad[0]])} "
                                 "is not a nucleotide (A, C, G, T, N or an IUPAC code)"
                                 + ("; RNA? pass --rna" if raw[bad[0]] in b"Uu" and not rna else ""))
        record_id = row[id_col].strip() if id_col is not None and id_col < len(row) else f"row{index + 1}"
        extra = " ".join(f"{header[i].strip()}={row[i].strip()}" for i in labels if i < len(row))
        title = f"{record_id} {extra}".strip()
        yield make_record(name, index, title, tokens, has_iupac(raw))

