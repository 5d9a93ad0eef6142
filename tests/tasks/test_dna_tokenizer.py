"""FASTA reading and tokenisation: what passes, what becomes N, and errors that name file, record, line."""

import bz2
import gzip
import lzma
from pathlib import Path

import numpy as np
import pytest

from swa_stream import SWAStreamError
from swa_stream.tasks.dna.formats import read_sequences
from swa_stream.tasks.dna.tokenizer import decode, encode, fingerprint, read_fasta, reverse_complement

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


def test_decode_is_encodes_inverse_up_to_case_and_iupac():
    assert decode(encode("ACGTNacgtn")) == "ACGTNACGTN"
    assert decode(encode("RYKMSWBDHV")) == "N" * 10
    assert decode(encode("")) == ""


def test_reverse_complement():
    assert reverse_complement(encode("AACGTN")).tolist() == encode("NACGTT").tolist()


def test_records_keep_order_duplicates_and_flags(tmp_path):
    path = write(tmp_path, ">a first\nACGT\nNNRY\n>a again\nacgt\n>empty\n>c\nAC\n")
    recs = list(read_fasta(path))
    assert [(r.id, r.index, r.length) for r in recs] == [("a", 0, 8), ("a", 1, 4), ("empty", 2, 0), ("c", 3, 2)]
    assert recs[0].had_iupac and recs[0].n_fraction == pytest.approx(0.5)
    assert not recs[1].had_iupac and recs[0].description == "a first"


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress], ids=["gzip", "bzip2", "xz"])
def test_compression_is_detected_by_content_not_name(tmp_path, compress):
    path = write(tmp_path, compress(b">x\nACGTR\n"), name="plain_name.fa")
    (rec,) = read_fasta(path)
    assert rec.tokens.tolist() == [0, 1, 2, 3, 4]


def test_truncated_compressed_input_is_one_line(tmp_path):
    path = write(tmp_path, gzip.compress((REAL / "ls_orchid.fasta").read_bytes())[:5000])
    with pytest.raises(SWAStreamError, match="cannot read"):
        list(read_fasta(path))


def test_rna_flag_reads_u_as_t():
    assert encode("ACGUu", rna=True).tolist() == [0, 1, 2, 3, 3]


def test_headers_indented_or_not_ascii(tmp_path):
    path = write(tmp_path, b"  >a one\nAC\n\t>b\xff\nGT\n>\xce\xbb phage\nA\n")
    recs = list(read_fasta(path))
    assert [(r.id, r.description) for r in recs] == [("a", "a one"), ("b\\xff", "b\\xff"), ("\u03bb", "\u03bb phage")]


def test_fastq_qualities_may_start_with_at_and_sequences_may_wrap(tmp_path):
    path = write(tmp_path, "@r1 read\nACGT\nNN\n+\n@@II\nII\n@r2\nGG\n+r2\n@I\n")
    recs = list(read_sequences(path, notice=lambda message: None))
    assert [(r.id, r.tokens.tolist()) for r in recs] == [("r1", [0, 1, 2, 3, 4, 4]), ("r2", [2, 2])]


def test_tables_detect_a_header_and_keep_labels_as_metadata(tmp_path):
    with_header = list(read_sequences(write(tmp_path, "id,seq,label\nx1,ACGT,1\nx2,GG,0\n", "a.csv")))
    assert [(r.id, r.description, r.length) for r in with_header] == [("x1", "x1 label=1", 4), ("x2", "x2 label=0", 2)]
    without = list(read_sequences(write(tmp_path, "ACGT\tpos\nGGN\tneg\n", "b.tsv")))
    assert [(r.id, r.length) for r in without] == [("row1", 4), ("row2", 3)]
    named_like_dna = list(read_sequences(write(tmp_path, "name,dna\nx,ACGT\n", "e.csv")))
    assert [(r.id, r.length) for r in named_like_dna] == [("x", 4)]  # "dna" is a header, not a sequence
    chosen = list(read_sequences(write(tmp_path, "1,AC,GGGG\n0,GT,CCCC\n", "c.csv"), column="3"))
    assert [r.length for r in chosen] == [4, 4]
    with pytest.raises(SWAStreamError, match="no column 'nope'"):
        list(read_sequences(write(tmp_path, "seq,label\nAC,1\n", "d.csv"), column="nope"))


def _flatfiles(tmp_path, source: Path) -> tuple[list, Path, Path]:
    """`source`'s records written by Biopython as GenBank and as EMBL, with a definition long enough to wrap
    and a feature whose qualifier wraps, as NCBI's and ENA's files have."""
    from Bio import SeqIO
    from Bio.SeqFeature import FeatureLocation, SeqFeature

    records = list(SeqIO.parse(str(source), "fasta"))
    for i, r in enumerate(records):
        r.id, r.name = f"ACC{i:04d}.{i % 3 + 1}", f"REC{i}"
        r.description = f"record {i} of {source.name}, " + " ".join(["a definition that wraps onto further lines"] * 3)
        r.annotations["molecule_type"] = "DNA"
        r.features.append(SeqFeature(FeatureLocation(0, min(len(r), 90), strand=-1), type="CDS",
                                     qualifiers={"note": ["12345 a qualifier with digits, long enough to wrap " * 4]}))
    gbk, embl = tmp_path / "x.gbk", tmp_path / "x.embl"
    SeqIO.write(records, str(gbk), "genbank")
    SeqIO.write(records, str(embl), "embl")
    return records, gbk, embl


@pytest.mark.parametrize("name", ["ls_orchid.fasta", "NC_005816.fna", "sequence.fa"])
def test_genbank_and_embl_read_as_the_fasta_they_were_written_from(tmp_path, name):
    """Records from Biopython's GenBank and EMBL writers: the FASTA's bases (N and IUPAC codes as N, soft
    masking as upper case), the accession.version as id, the definition in the title."""
    records, gbk, embl = _flatfiles(tmp_path, REAL / name)
    fasta = list(read_fasta(REAL / name))
    norm = lambda text: " ".join(text.split()).rstrip(".")  # noqa: E731
    for path in (gbk, embl):
        got = list(read_sequences(path))
        assert [r.id for r in got] == [r.id for r in records] and [r.index for r in got] == list(range(len(got)))
        for mine, theirs, written in zip(got, fasta, records, strict=True):
            assert np.array_equal(mine.tokens, theirs.tokens) and mine.had_iupac == theirs.had_iupac
            assert norm(mine.description) == norm(f"{written.id} {written.description}")  # GenBank adds a "."


RELEASE_TITLE = """GBBCT1.SEQ          Genetic Sequence Data Bank
                          October 15 2024

                NCBI-GenBank Flat File Release 264.0

                         Bacterial Sequences (Part 1)

   28373 loci,    93006520 bases, from    28373 reported sequences


"""  # the title page of an NCBI release file, as gbrel.txt (section 3.4.4) lays it out


def test_an_ncbi_release_file_reads_from_its_first_locus(tmp_path):
    records, gbk, _ = _flatfiles(tmp_path, REAL / "ls_orchid.fasta")
    release = tmp_path / "gbbct1.seq"
    release.write_text(RELEASE_TITLE + gbk.read_text())
    got, plain = list(read_sequences(release)), list(read_sequences(gbk))
    assert [(r.id, r.index, r.description) for r in got] == [(r.id, r.index, r.description) for r in plain]
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(got, plain, strict=True))
    with pytest.raises(SWAStreamError, match="gbbct2.seq: a GenBank release file with no LOCUS record"):
        list(read_sequences(write(tmp_path, RELEASE_TITLE, "gbbct2.seq")))
    with pytest.raises(SWAStreamError, match="line 1: expected a '>' header"):  # a FASTA-only reader stays one
        list(read_sequences(release, formats=("fasta",)))
    quoting = write(tmp_path, ">s1 from the Genetic Sequence Data Bank\nACGT\n", "quoting.fa")  # only the title page
    assert [r.id for r in read_sequences(quoting)] == ["s1"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # Prokka 1.14 leaves ACCESSION and VERSION empty; its .fna names the record by the LOCUS name too
        ("LOCUS       contig_1                  12 bp    DNA     linear       20-MAY-2024\nDEFINITION  Genus "
         "species.\nACCESSION   \nVERSION\nFEATURES             Location/Qualifiers\nORIGIN\n        1 acgtacgtac "
         "gt\n//\n", ("contig_1", "contig_1 Genus species.", 12)),
        # EMBL's older ID line names the entry; the SV line holds the accession.version
        ("ID   TRBG361    standard; mRNA; PLN; 8 BP.\nXX\nAC   X56734;\nXX\nSV   X56734.1\nXX\nDE   Trifolium repens "
         "mRNA\nSQ   Sequence 8 BP;\n     acgtacgt        8\n//\n", ("X56734.1", "X56734.1 Trifolium repens mRNA", 8)),
        ("LOCUS       X 4 bp DNA\r\nVERSION     X.2  GI:123\r\nORIGIN      \r\n        1 ACGT\r\n//\r\n",
         ("X.2", "X.2", 4)),
    ],
    ids=["prokka", "embl-old-id", "crlf-gi"],
)
def test_flatfile_ids_as_the_tools_that_write_them(tmp_path, content, expected):
    (record,) = read_sequences(write(tmp_path, content, "x.gbk"))
    assert (record.id, record.description, record.length) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("LOCUS       X 8 bp DNA\nVERSION     X.1\nORIGIN\n        1 acgtEcgt\n//\n",
         "x.gbk: record 1 (X.1), line 4, byte 60: 'E' is not a nucleotide"),  # 46 bytes before line 4
        ("LOCUS       X 8 bp DNA\nACCESSION   X\nCONTIG      join(A:1..8)\n//\n",
         "x.gbk: record 1 (X), line 4: the record ends with no sequence (no ORIGIN section): a CON"),
        ("LOCUS       X 8 bp DNA\nORIGIN\n        1 acgtacgt\n", "x.gbk: record 1 (X): ends before its '//' line"),
        ("LOCUS       X 4 bp DNA\nORIGIN\n        1 acgt\n//\nFEATURES\n", "x.gbk: line 5: expected a GenBank LOCUS"),
        ("ID   Y; SV 2; linear; DNA\nSQ   Sequence 4 BP;\n     acgu 4\n//\n", "x.gbk: record 1 (Y.2), line 3, byte"),
    ],
    ids=["bad-base", "no-origin", "truncated", "junk-after", "embl-rna"],
)
def test_flatfile_errors_name_the_record_and_line(tmp_path, content, message):
    path = write(tmp_path, content, "x.gbk")
    with pytest.raises(SWAStreamError) as err:
        list(read_sequences(path))
    assert str(err.value).startswith(f"{path.parent}/{message}"), str(err.value)


def test_fingerprint_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    path = write(tmp_path, ">x\n" + "A" * 5000 + "\n")
    before, stat = fingerprint(path), path.stat()
    path.write_bytes(path.read_bytes().replace(b"AAAA", b"AAAC", 1))
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and fingerprint(path) != before


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file"),
        ("\n" * 70_000, "empty file"),
        ("\n\n", "empty file"),
        ("ACGT\nACGT\n", "line 1: expected a '>' header"),
        ("\n\nhello\n>x\nAC\n", "line 3: expected a '>' header"),
        (">x\nACGT\nAC1T\n", r"record 1 \(x\), line 3, byte 10: '1' is not a nucleotide"),
        (">x\nACGT\n>p\nMKVLEF\n", r"record 2 \(p\), line 4, byte 14: 'L' is not a nucleotide"),
        (">x\nACGU\n", r"'U' is not a nucleotide .*; RNA\? pass --rna"),
        ("@r\nACGT\n+\nII\n", r"2 quality characters for 4 bases"),
        ("@r\nACGT\n", r"ends before its '\+' line"),
        ("seq,label\nACGT,1\nAXGT,0\n", r"line 3, column 1: 'X' is not a nucleotide"),
        (b">x\nAC\x00GT\n", "binary data"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    ],
)
def test_bad_input_names_the_file_and_the_problem(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(SWAStreamError, match=message) as err:
        list(read_sequences(path))
    assert str(err.value).startswith(str(path))


def test_a_protein_fasta_is_told_apart(tmp_path):
    """A protein FASTA (call-genes' own --faa layout) given where DNA is read: M, K and R are nucleotide codes
    too, so the first letter that cannot be one, I, is named, and the line says what the file probably is."""
    head = ">gene_1 # 1 # 30 # 1 # ID=gene_1\n"
    path = write(tmp_path, head + "MKRISTTITTTITITTGNGAG*\n", "p.faa")
    with pytest.raises(SWAStreamError) as err:
        list(read_fasta(path))
    assert str(err.value) == (f"{path}: record 1 (gene_1), line 2, byte {len(head) + 3}: 'I' is not a nucleotide "
                              "(A, C, G, T, N or an IUPAC code); a protein sequence? this reads DNA (or RNA with "
                              "--rna), not amino acids")


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
