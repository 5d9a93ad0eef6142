"""`swa-stream call-genes` on the real E. coli K-12 region that `make demo` shows (held out from training):
GFF3 that a GFF3 reader takes back, the same calls as the library, most of RefSeq's genes found by their
stop codon, a bedGraph of the called track, and outputs that never replace an input."""

import subprocess
import sys

import numpy as np
import pytest

from swa_stream.pipelines.bundles import bundled_models, load_dna_model
from swa_stream.pipelines.cli import main
from swa_stream.pipelines.genes_demo import example_files
from swa_stream.tasks.dna.annotation import gff3_features, read_gff3
from swa_stream.tasks.dna.orfs import call_genes, stop_matches
from swa_stream.tasks.dna.tokenizer import read_fasta
from swa_stream.tasks.dna.track import stream_both_strands

pytestmark = pytest.mark.skipif("bacteria-genes" not in bundled_models(), reason="bacteria-genes is not bundled")
FASTA, GFF = example_files()
CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]


def test_calls_are_gff3_equal_to_the_library_and_find_refseq_genes(tmp_path, capsys):
    out, bg = tmp_path / "calls.gff3", tmp_path / "called.bedgraph"
    assert main(["call-genes", str(FASTA), "--gff", str(out), "--bedgraph", str(bg)]) == 0
    said = capsys.readouterr()
    assert f"gene calls on 1 record(s) to {out}" in said.out and "kbp/s" in said.err
    record = next(iter(read_fasta(FASTA)))
    written = [(start, end, strand) for _, (start, end, strand), attrs in gff3_features(out, feature="CDS")]
    expected = call_genes(record.tokens, stream_both_strands(load_dna_model("bacteria-genes"), record.tokens))
    assert written == [(g.start, g.end, g.strand) for g in expected]
    assert set(read_gff3(out)) == {record.id}
    refseq = read_gff3(GFF)[record.id]
    match = stop_matches(written, refseq)
    assert match["genes"] == 32 and match["found"] >= 24 and match["precision"] >= 0.8
    lines = bg.read_text().splitlines()
    assert lines[0].startswith("track type=bedGraph")
    cols = [line.split("\t") for line in lines[1:]]
    assert int(cols[0][1]) == 0 and int(cols[-1][2]) == len(record.tokens)
    assert all(int(a[2]) == int(b[1]) for a, b in zip(cols, cols[1:], strict=False))  # no gaps: no N here
    values = np.array([float(c[3]) for c in cols])
    assert ((values >= 0) & (values <= 1)).all() and (values > 0.5).any() and (values < 0.5).any()


def test_dash_reads_stdin_and_writes_gff3_to_stdout(tmp_path):
    """`zcat genome.fa.gz | swa-stream call-genes - --gff -`, as Prodigal is run: the GFF3 on stdout is the
    file run's, and the summary goes to stderr."""
    file_gff = tmp_path / "file.gff3"
    assert main(["call-genes", str(FASTA), "--gff", str(file_gff)]) == 0
    with subprocess.Popen(["cat", str(FASTA)], stdout=subprocess.PIPE) as feed:  # a pipe, read once
        result = subprocess.run(CLI + ["call-genes", "-", "--gff", "-"], stdin=feed.stdout, capture_output=True,
                                text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == file_gff.read_text() and "gene calls on 1 record(s) to stdout" in result.stderr
    assert not (tmp_path / "-").exists()
    both = subprocess.run(CLI + ["call-genes", str(FASTA), "--gff", "-", "--bedgraph", "-"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert both.returncode == 2 and both.stdout == ""
    assert both.stderr == "swa-stream: error: --bedgraph -: another output already goes to standard output; give " \
        "one a file name\n"


def test_faa_and_fna_are_the_calls_proteins_and_bases_as_prodigal_writes_them(tmp_path, capsys):
    """--faa/--fna: one FASTA entry per GFF3 row, the same coordinates; where a call is a RefSeq gene end to
    end, its bases are the genome's at RefSeq's coordinates (cut and reverse-complemented by Biopython) and its
    protein is Biopython's CDS translation (table 11, start as M) with Prodigal's final "*"."""
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    gff, faa, fna = tmp_path / "c.gff3", tmp_path / "c.faa", tmp_path / "c.fna"
    assert main(["call-genes", str(FASTA), "--gff", str(gff), "--faa", str(faa), "--fna", str(fna)]) == 0
    said = capsys.readouterr().out
    assert f"the proteins to {faa}, the genes' bases to {fna}" in said
    rows = [(start, end, strand) for _, (start, end, strand), _ in gff3_features(gff, feature="CDS")]
    with open(faa) as f:
        proteins = list(SimpleFastaParser(f))
    with open(fna) as f:
        bases = list(SimpleFastaParser(f))
    assert len(rows) == len(proteins) == len(bases) > 20
    genome = next(SeqIO.parse(str(FASTA), "fasta")).seq
    refseq = set(read_gff3(GFF)[next(iter(read_fasta(FASTA))).id])
    exact = edges = 0
    for (start, end, strand), (p_head, protein), (n_head, dna) in zip(rows, proteins, bases, strict=True):
        fields = p_head.split(" # ")
        assert p_head == n_head and fields[1:4] == [str(start + 1), str(end), "1" if strand == "+" else "-1"]
        attrs = dict(kv.split("=") for kv in fields[4].split(";"))
        five_off, three_off = (attrs["partial"][i] == "1" for i in ((0, 1) if strand == "+" else (1, 0)))
        edges += five_off or three_off
        assert len(dna) == end - start and len(dna) % 3 == 0
        assert attrs["start_type"] == ("Edge" if five_off else dna[:3])
        assert protein[0] == (str(Seq(dna[:3]).translate(table=11)) if five_off else "M")  # no start codon: as coded
        assert protein.endswith("*") != three_off and "*" not in protein[:-1] and len(protein) == len(dna) // 3
        if (start, end, strand) in refseq:
            piece = genome[start:end] if strand == "+" else genome[start:end].reverse_complement()
            assert dna == str(piece).upper()
            assert protein == str(piece.translate(table=11, cds=True)) + "*"
            exact += 1
    assert exact >= 15 and edges == 2  # the region's cut ends: one gene runs off each


def test_closed_ends_drops_the_two_genes_the_region_cuts(tmp_path, capsys):
    """The region's ends cut two RefSeq genes; by default each is called from the cut (partial=10 at the left
    end, 01 at the right), with --closed-ends neither is, and every other call is the same."""
    open_gff, closed_gff = tmp_path / "open.gff3", tmp_path / "closed.gff3"
    assert main(["call-genes", str(FASTA), "--gff", str(open_gff)]) == 0
    assert main(["call-genes", str(FASTA), "--gff", str(closed_gff), "--closed-ends"]) == 0
    capsys.readouterr()
    rows = lambda path: {(i, a["partial"]) for _, i, a in gff3_features(path, feature="CDS")}  # noqa: E731
    opened, closed = rows(open_gff), rows(closed_gff)
    n = len(next(iter(read_fasta(FASTA))).tokens)
    cut = opened - closed
    assert sorted(flag for _, flag in cut) == ["01", "10"] and {flag for _, flag in closed} == {"00"}
    assert {i[0] for i, flag in cut if flag == "10"} == {1} and {i[1] for i, flag in cut if flag == "01"} == {n}
    refseq = read_gff3(GFF)[next(iter(read_fasta(FASTA))).id]
    assert closed == opened - cut and all(i not in refseq for i, _ in cut)  # RefSeq's region file holds whole genes
    lines = closed_gff.read_text().splitlines()
    assert lines[1].endswith("; transl_table=11; closed ends")
    table4 = tmp_path / "t4.gff3"
    assert main(["call-genes", str(FASTA), "--gff", str(table4), "--table", "4"]) == 0  # E. coli is table 11:
    assert "transl_table=4" in table4.read_text().splitlines()[1]  # TGA read through, genes fuse and shift
    assert rows(table4) != opened


def test_a_genbank_file_gives_the_calls_of_its_fasta(tmp_path, capsys):
    """The region as NCBI would ship it, GenBank with features (Biopython's writer), gzipped: the same calls."""
    import gzip

    from Bio import SeqIO
    from Bio.SeqFeature import FeatureLocation, SeqFeature

    record = next(SeqIO.parse(str(FASTA), "fasta"))
    record.id, record.name, record.description = "NC_000913.3", "NC_000913", "Escherichia coli K-12 MG1655"
    record.annotations["molecule_type"] = "DNA"
    record.features = [SeqFeature(FeatureLocation(s, e, strand=1 if t == "+" else -1), type="CDS")
                       for s, e, t in read_gff3(GFF)[next(iter(read_fasta(FASTA))).id]]
    gbk = tmp_path / "region.gbk.gz"
    with gzip.open(gbk, "wt") as f:
        SeqIO.write([record], f, "genbank")
    from_fasta, from_gbk = tmp_path / "a.gff3", tmp_path / "b.gff3"
    assert main(["call-genes", str(FASTA), "--gff", str(from_fasta)]) == 0
    assert main(["call-genes", str(gbk), "--gff", str(from_gbk)]) == 0
    capsys.readouterr()
    calls = lambda path: [interval for _, interval, _ in gff3_features(path, feature="CDS")]  # noqa: E731
    assert calls(from_gbk) == calls(from_fasta) and len(calls(from_gbk)) >= 24
    assert set(read_gff3(from_gbk)) == {"NC_000913.3"}


def test_outputs_never_replace_an_input_and_bad_input_is_one_line(tmp_path, capsys):
    before = FASTA.read_bytes()
    assert main(["call-genes", str(FASTA), "--gff", str(FASTA)]) == 2
    err = capsys.readouterr().err
    assert "names an input" in err and err.count("\n") == 1 and FASTA.read_bytes() == before
    assert main(["call-genes", str(tmp_path / "missing.fa"), "--gff", str(tmp_path / "x.gff3")]) == 2
    assert capsys.readouterr().err.strip() == f"swa-stream: error: {tmp_path / 'missing.fa'}: no such file"
    out = tmp_path / "same.gff3"
    assert main(["call-genes", str(FASTA), "--gff", str(out), "--bedgraph", str(out)]) == 2
    assert "another output" in capsys.readouterr().err and not out.exists()
    if "ecoli-promoters" in bundled_models():  # a record classifier's untrained track is not a gene track
        assert main(["call-genes", str(FASTA), "--gff", str(out), "--model", "ecoli-promoters"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "ecoli-promoters: a record classifier (classes: non_promoter, " in err
        assert not out.exists()


def test_outputs_replace_only_what_call_genes_wrote(tmp_path, capsys):
    """A genome, an annotation or a bedGraph that sits beside the input is never replaced, even when it is
    the kind of file asked for (`--fna genome.fna` next to genome.fna.gz); call-genes' own outputs are, by a
    rerun. stdin can be read once: "-" twice is refused before any work."""
    genome, annotation, track = tmp_path / "genome.fna", tmp_path / "refseq.gff3", tmp_path / "mine.bedgraph"
    genome.write_text(FASTA.read_text())
    annotation.write_text("##gff-version 3\nNC_1\tRefSeq\tCDS\t1\t9\t.\t+\t0\tID=a\n")
    track.write_text("track type=bedGraph name=lab\nchr1\t0\t5\t1.0\n")
    out = tmp_path / "calls.gff3"
    for flag, path in (("--fna", genome), ("--faa", genome), ("--gff", annotation), ("--bedgraph", track)):
        before = path.read_bytes()
        argv = ["call-genes", str(FASTA), "--gff", str(out)] if flag != "--gff" else ["call-genes", str(FASTA)]
        assert main([*argv, flag, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refusing to overwrite it" in err and path.read_bytes() == before, err
    argv = ["call-genes", str(FASTA), "--gff", str(out), "--faa", str(tmp_path / "p.faa"), "--bedgraph",
            str(tmp_path / "c.bedgraph")]
    assert main(argv) == 0 and main(argv) == 0  # a rerun replaces its own outputs
    assert main(["call-genes", "-", "-", "--gff", str(tmp_path / "twice.gff3")]) == 2
    assert "-: given more than once; standard input can be read only once" in capsys.readouterr().err


def test_short_empty_and_n_records_give_no_calls_and_valid_gff3(tmp_path, capsys):
    fasta = tmp_path / "odd.fa"
    fasta.write_text(">short\nAC\n>all_n\nNNNNNNNNNN\n>empty\n\n")
    out = tmp_path / "odd.gff3"
    assert main(["call-genes", str(fasta), "--gff", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "##gff-version 3" and "##sequence-region short 1 2" in lines
    assert not any(line.endswith(" 1 0") for line in lines)  # an empty record gets no (invalid) region line
    assert not [line for line in lines if not line.startswith("#")]
    assert "0 gene calls on 3 record(s)" in capsys.readouterr().out


def test_duplicate_record_ids_are_refused_and_seqids_are_escaped(tmp_path, capsys):
    from swa_stream.pipelines.call_genes import _seqid

    assert _seqid("ctg~1;a=b,c%d") == "ctg%7E1%3Ba%3Db%2Cc%25d" and _seqid("NC_000913.3:1-9|x") == "NC_000913.3:1-9|x"
    fasta = tmp_path / "dup.fa"
    fasta.write_text(">ctg1\nACGTACGTAC\n>ctg1 again\nACGTACGTAC\n")
    out = tmp_path / "dup.gff3"
    assert main(["call-genes", str(fasta), "--gff", str(out)]) == 2
    assert "record id 'ctg1' occurs twice" in capsys.readouterr().err and not out.exists()
    assert main(["call-genes", str(fasta), "--gff", str(out), "--bedgraph", ""]) == 2
    assert "--bedgraph: an empty path" in capsys.readouterr().err
