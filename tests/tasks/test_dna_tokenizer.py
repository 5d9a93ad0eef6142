"""FASTA reading and tokenisation: what passes, what becomes N, and errors that name file, record, line."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from swa_stream import SWAStreamError
from swa_stream.tasks.dna.tokenizer import encode, read_fasta, reverse_complement

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "fasta"
REAL_FILES = sorted(p for p in REAL.glob("*") if p.suffix in {".fa", ".fasta", ".fna"})


def write(tmp_path, text: str | bytes, name="in.fa") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_alphabet_case_and_iupac():
    assert encode("ACGTNacgtn").tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert encode("RYKMSWBDHVrykmswbdhv").tolist() == [4] * 20
    assert (encode("ACGU E") == 255).tolist() == [False, False, False, True, True, True]


def test_reverse_complement():
    assert reverse_complement(encode("AACGTN")).tolist() == encode("NACGTT").tolist()


def test_records_keep_order_duplicates_and_flags(tmp_path):
    path = write(tmp_path, ">a first\nACGT\nNNRY\n>a again\nacgt\n>empty\n>c\nAC\n")
    recs = list(read_fasta(path))
    assert [(r.id, r.index, r.length) for r in recs] == [("a", 0, 8), ("a", 1, 4), ("empty", 2, 0), ("c", 3, 2)]
    assert recs[0].had_iupac and recs[0].n_fraction == pytest.approx(0.5)
    assert not recs[1].had_iupac and recs[0].description == "a first"


def test_gzip_is_detected_by_content_not_name(tmp_path):
    path = write(tmp_path, gzip.compress(b">x\nACGTR\n"), name="plain_name.fa")
    (rec,) = read_fasta(path)
    assert rec.tokens.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file"),
        ("\n\n", "empty file"),
        ("ACGT\nACGT\n", "line 1: expected a '>' header"),
        ("\n\nhello\n>x\nAC\n", "line 3: expected a '>' header"),
        (">x\nACGT\nAC1T\n", r"record 1 \(x\), line 3: '1' is not a nucleotide"),
        (">x\nACGT\n>p\nMKVLEF\n", r"record 2 \(p\), line 4: 'L' is not a nucleotide"),
        (b">x\nAC\x00GT\n", "binary data"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    ],
)
def test_bad_input_names_the_file_and_the_problem(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(SWAStreamError, match=message) as err:
        list(read_fasta(path))
    assert str(err.value).startswith(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(SWAStreamError, match="no such file"):
        list(read_fasta(tmp_path / "nope.fa"))


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_every_real_file_reads(path):
    recs = list(read_fasta(path))
    assert recs and all(np.all(r.tokens < 5) for r in recs)


def test_soft_masked_genome_tokenises_like_upper_case():
    (upper,), (lower,) = read_fasta(REAL / "NC_001802.fna"), read_fasta(REAL / "NC_001802lc.fna")
    assert np.array_equal(upper.tokens, lower.tokens)
