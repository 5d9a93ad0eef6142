"""score-fasta: every record scored, in order, exact for any chunk size, resumable, and the same on 2 processes."""

import bz2
import csv
import gzip
import json
import lzma
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from Bio.SeqIO.FastaIO import SimpleFastaParser
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.pipelines.cli import main
from swa_stream.pipelines.fasta_store import Store, all_entries

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "fasta"
REAL_FILES = sorted(str(p) for p in REAL.glob("*") if p.suffix in {".fa", ".fasta", ".fna"})
PROMOTERS = REAL.parent / "promoters"
CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]


def read_tsv(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def score(tmp_path, model_dir, inputs, name="out", *extra):
    out, tsv = tmp_path / f"{name}.zarr", tmp_path / f"{name}.tsv"
    assert main(["score-fasta", *inputs, "--out", str(out), "--tsv", str(tsv), "--model", model_dir, *extra]) == 0
    return out, read_tsv(tsv)


def test_every_real_record_is_scored_in_order_with_duplicates_kept(tmp_path, model_dir):
    out, rows = score(tmp_path, model_dir, REAL_FILES, "real", "--per-position")
    expected = []
    for path in REAL_FILES:
        expected += [(path, str(i)) for i in range(Path(path).read_text().count(">"))]
    assert [(r["file"], r["record_index"]) for r in rows] == expected
    assert list(rows[0]) == ["file", "record_index", "id", "length", "p_far", "p_near", "n_fraction"]
    dups = [r["id"] for r in rows if r["file"].endswith("dups.fasta")]
    assert dups == ["alpha", "beta", "gamma", "alpha", "delta"]
    group = zarr.open_group(out, mode="r")
    assert group["records/probs"].shape == (len(rows), 2)
    assert list(group["records/length"][:]) == [int(r["length"]) for r in rows]
    assert Store(out).track(0).shape == (int(rows[0]["length"]), 1)
    assert group["tracks"].shape == (sum(int(r["length"]) for r in rows), 1)  # one ragged array
    assert group.attrs["classes"] == ["far", "near"]
    assert group.attrs["command"].startswith("swa-stream score-fasta ")


def test_soft_masking_does_not_change_scores(tmp_path, model_dir):
    _, rows = score(tmp_path, model_dir, [str(REAL / "NC_001802.fna"), str(REAL / "NC_001802lc.fna")])
    assert rows[0]["p_far"] == rows[1]["p_far"]


def test_chunk_size_never_changes_a_score(tmp_path, model_dir):
    inputs = [str(REAL / "sequence.fa"), str(REAL / "NC_005816.fna")]
    _, whole = score(tmp_path, model_dir, inputs, "whole", "--per-position")
    extra = ["--per-position", "--chunk-size", "37", "--batch-size", "1"]
    out, small = score(tmp_path, model_dir, inputs, "small", *extra)
    for a, b in zip(whole, small, strict=True):
        assert abs(float(a["p_near"]) - float(b["p_near"])) <= 2e-6
    np.testing.assert_allclose(Store(out).track(6), Store(tmp_path / "whole.zarr").track(6), atol=1e-5)


def test_reverse_complement_average_is_strand_symmetric(tmp_path, model_dir):
    seq = "ACGTTGCAAGGCTTAAN" * 13 + "GATTACA"
    comp = seq.translate(str.maketrans("ACGTN", "TGCAN"))[::-1]
    path = tmp_path / "pair.fa"
    path.write_text(f">fwd\n{seq}\n>rev\n{comp}\n")
    _, rows = score(tmp_path, model_dir, [str(path)], "rc", "--rc-average", "--chunk-size", "50")
    assert abs(float(rows[0]["p_near"]) - float(rows[1]["p_near"])) <= 2e-6


def test_empty_record_is_scored_and_flagged(tmp_path, model_dir):
    path = tmp_path / "e.fa"
    path.write_text(">full\nACGT\n>hollow\n>tail\nGG\n")
    out, rows = score(tmp_path, model_dir, [str(path)], "empty")
    assert [r["id"] for r in rows] == ["full", "hollow", "tail"]
    assert list(zarr.open_group(out, mode="r")["records/empty"][:]) == [False, True, False]


@pytest.mark.parametrize(
    "content, message", [("ACGT\n", "expected a '>' header"), (">x\nAC?T\n", "is not a nucleotide")]
)
def test_bad_fasta_is_one_line_exit_2(tmp_path, model_dir, content, message):
    path = tmp_path / "bad.fa"
    path.write_text(content)
    result = subprocess.run(
        CLI + ["score-fasta", str(path), "--out", str(tmp_path / "o.zarr"), "--model", model_dir],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"swa-stream: error: {path}" in result.stderr and message in result.stderr
    # nothing was finished, so the run folder it made is gone: the next command, on other inputs, is not refused
    assert not (tmp_path / "o.zarr.partial").exists()


def many_records(tmp_path, n=300, length=3000):
    rng = np.random.default_rng(0)
    path = tmp_path / "many.fa"
    with open(path, "w") as f:
        for i in range(n):
            f.write(f">r{i}\n" + "".join("ACGT"[j] for j in rng.integers(0, 4, length)) + "\n")
    return str(path)


def test_a_killed_run_resumes_without_losing_or_redoing_work(tmp_path, model_dir):
    fasta = many_records(tmp_path)
    out = tmp_path / "resumed.zarr"
    # 3,000 bp records over a 1,024 bp chunk stream, and each streamed record is committed as it ends: the log
    # grows record by record however fast the machine (batched short records commit only every 2 s)
    options = ["--batch-size", "1", "--per-position", "--chunk-size", "1024"]
    cmd = CLI + ["score-fasta", fasta, "--out", str(out), "--tsv", str(tmp_path / "resumed.tsv"),
                 "--model", model_dir, *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "resumed.zarr.partial" / "log.0"
    deadline = time.time() + 60
    while time.time() < deadline and (log.read_bytes().count(b"\n") if log.exists() else 0) < 20:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = log.read_bytes().count(b"\n")
    assert 0 < finished_before < 300 and not out.exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {finished_before} records" in rerun.stderr
    _, fresh = score(tmp_path, model_dir, [fasta], "fresh", *options)
    assert read_tsv(tmp_path / "resumed.tsv") == fresh


def test_two_processes_give_the_same_result_as_one(tmp_path, model_dir):
    inputs = [str(REAL / "ls_orchid.fasta"), str(REAL / "sequence.fa")]
    _, single = score(tmp_path, model_dir, inputs, "one", "--per-position")
    result = subprocess.run(
        CLI + ["score-fasta", *inputs, "--out", str(tmp_path / "two.zarr"), "--tsv", str(tmp_path / "two.tsv"),
               "--model", model_dir, "--per-position", "--devices", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_tsv(tmp_path / "two.tsv") == single
    one, two = Store(tmp_path / "one.zarr"), Store(tmp_path / "two.zarr")
    for i in (0, 1, 50, 99):
        np.testing.assert_array_equal(one.track(i), two.track(i))


def test_finalising_a_block_at_a_time_gives_the_same_store(tmp_path, model_dir, monkeypatch):
    """Finalise reads the logs back a block of records at a time (so a million records never sit in memory
    at once): blocks of 7 records, with empty records and two processes' logs, give the store and TSV that
    one block gives."""
    from swa_stream.pipelines import fasta_store

    inputs = [str(REAL / "ls_orchid.fasta"), str(REAL / "dups.fasta")]
    (tmp_path / "empty.fa").write_text(">e1\n>e2 nothing\nACGT\n>e3\n")
    inputs.append(str(tmp_path / "empty.fa"))
    one, rows = score(tmp_path, model_dir, inputs, "one", "--per-position", "--batch-size", "5")
    monkeypatch.setattr(fasta_store, "BLOCK_RECORDS", 7)
    result = subprocess.run(
        CLI + ["score-fasta", *inputs, "--out", str(tmp_path / "two.zarr"), "--tsv", str(tmp_path / "two.tsv"),
               "--model", model_dir, "--per-position", "--devices", "2", "--batch-size", "5"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]  # (the 2-process run finalises with default blocks)
    blocks, rows_blocks = score(tmp_path, model_dir, inputs, "blocks", "--per-position", "--batch-size", "5")
    assert rows_blocks == rows == read_tsv(tmp_path / "two.tsv")
    a, b, c = (zarr.open_group(p, mode="r") for p in (one, blocks, tmp_path / "two.zarr"))
    assert b["records/id"].chunks == (7,)
    for name in ("file", "record_index", "id", "description", "length", "n_fraction", "had_iupac", "empty",
                 "probs", "track_offset"):
        for other in (b, c):
            np.testing.assert_array_equal(a[f"records/{name}"][:], other[f"records/{name}"][:])
    np.testing.assert_array_equal(a["tracks"][:], b["tracks"][:])
    np.testing.assert_array_equal(a["tracks"][:], c["tracks"][:])
    assert list(a["records/empty"][-3:]) == [True, False, True]


def test_an_existing_complete_store_is_not_overwritten(tmp_path, model_dir):
    score(tmp_path, model_dir, [str(REAL / "ex1.fa")], "done")
    code = main(["score-fasta", str(REAL / "ex1.fa"), "--out", str(tmp_path / "done.zarr"), "--model", model_dir])
    assert code == 2


# ---- formats: every one scores exactly as the same sequences in plain FASTA ------------------------------------
def scores_of(rows):
    return [(r["id"], r["length"], r["p_far"], r["p_near"]) for r in rows]


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress], ids=["gzip", "bzip2", "xz"])
def test_compressed_input_is_recognised_by_content(tmp_path, model_dir, compress):
    plain = REAL / "ls_orchid.fasta"
    packed = tmp_path / "orchids.txt"  # the name says nothing about the compression
    packed.write_bytes(compress(plain.read_bytes()))
    _, expected = score(tmp_path, model_dir, [str(plain)], "plain")
    _, rows = score(tmp_path, model_dir, [str(packed)], "packed")
    assert scores_of(rows) == scores_of(expected) and len(rows) == 94


def fastq_of(fasta: Path, path: Path) -> Path:
    """The records of a real FASTA as FASTQ, with qualities that start with '@' to test the parser."""
    with open(path, "w") as f:
        for title, seq in SimpleFastaParser(open(fasta)):
            f.write(f"@{title}\n{seq}\n+\n{'@' + 'I' * (len(seq) - 1)}\n")
    return path


def test_fastq_is_scored_and_the_ignored_qualities_are_said_once(tmp_path, model_dir):
    reads = REAL / "E3MFGYR02_random_10_reads.fasta"
    fastq = fastq_of(reads, tmp_path / "reads.fq")
    _, expected = score(tmp_path, model_dir, [str(reads)], "fa")
    result = subprocess.run(CLI + ["score-fasta", str(fastq), "--out", str(tmp_path / "fq.zarr"), "--tsv",
                                   str(tmp_path / "fq.tsv"), "--model", model_dir], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("qualities are ignored") == 1
    assert scores_of(read_tsv(tmp_path / "fq.tsv")) == scores_of(expected)


def promoter_rows(n=15):
    rows = []
    for name, label in (("Ecoli_prom.fa", "promoter"), ("Ecoli_non_prom.fa", "other")):
        records = list(SimpleFastaParser(open(PROMOTERS / name)))[:n]
        rows += [(title.split()[0], seq, label) for title, seq in records]
    return rows


@pytest.mark.parametrize("layout", ["csv_header", "tsv_no_header", "chosen_column"])
def test_csv_and_tsv_tables_score_like_fasta(tmp_path, model_dir, layout):
    rows = promoter_rows()
    fasta = tmp_path / "p.fa"
    fasta.write_text("".join(f">row{i + 1}\n{seq}\n" for i, (_, seq, _) in enumerate(rows)))
    table, extra = tmp_path / "p.table", []
    if layout == "csv_header":
        table.write_text("sequence,label\n" + "".join(f"{seq},{label}\n" for _, seq, label in rows))
    elif layout == "tsv_no_header":
        table.write_text("".join(f"{seq}\t{label}\n" for _, seq, label in rows))
    else:  # the label first and a column of ids that is also letters: the user names the column
        table.write_text("label,name,dna_seq\n" + "".join(f"{label},{i},{seq}\n" for i, (_, seq, label) in
                                                          enumerate(rows)))
        extra = ["--column", "dna_seq"]
    _, expected = score(tmp_path, model_dir, [str(fasta)], "fa")
    _, got = score(tmp_path, model_dir, [str(table)], "table", *extra)
    strip = [(r["length"], r["p_far"], r["p_near"]) for r in got]
    assert strip == [(r["length"], r["p_far"], r["p_near"]) for r in expected] and len(got) == 30
    if layout == "chosen_column":
        assert [r["id"] for r in got] == [str(i) for i in range(30)]


def test_rna_needs_the_flag_and_then_reads_u_as_t(tmp_path, model_dir, capsys):
    dna = REAL / "ex1.fa"
    rna = tmp_path / "ex1_rna.fa"
    rna.write_text("".join(line if line.startswith(">") else line.replace("T", "U").replace("t", "u")
                           for line in dna.read_text().splitlines(keepends=True)))
    assert main(["score-fasta", str(rna), "--out", str(tmp_path / "r.zarr"), "--model", model_dir]) == 2
    assert "pass --rna" in capsys.readouterr().err
    _, expected = score(tmp_path, model_dir, [str(dna)], "dna")
    _, got = score(tmp_path, model_dir, [str(rna)], "rna", "--rna")
    assert scores_of(got) == scores_of(expected)


def test_indented_headers_and_non_ascii_header_bytes(tmp_path, model_dir):
    path = tmp_path / "odd.fa"
    path.write_bytes(b" >a first\nACGTACGT\n\t>b\nGGCC\n>caf\xc3\xa9 Escherichia \xff\nACGT\n")
    out, rows = score(tmp_path, model_dir, [str(path)], "odd")
    assert [r["id"] for r in rows] == ["a", "b", "café"]
    descriptions = list(zarr.open_group(out, mode="r")["records/description"][:])
    assert descriptions == ["a first", "b", "café Escherichia \\xff"]


def test_n_positions_are_nan_in_the_track_and_counted_in_the_tsv(tmp_path, model_dir):
    fasta = REAL / "sequence.fa"  # real records with N runs
    out, rows = score(tmp_path, model_dir, [str(fasta)], "n", "--per-position", "--rc-average",
                      "--chunk-size", "100")  # records longer than a chunk stream; shorter ones batch
    store = Store(out)
    for n, (_, seq) in enumerate(SimpleFastaParser(open(fasta))):
        is_n = np.array([c in "Nn" for c in seq])
        track = store.track(n)[:, 0]
        assert np.array_equal(np.isnan(track), is_n), n
        assert float(rows[n]["n_fraction"]) == pytest.approx(is_n.mean(), abs=1e-4)
    assert any(float(r["n_fraction"]) > 0 for r in rows)


@pytest.mark.parametrize("chunk,threads", [(37, 1), (64, 1), (700, 1), (37, 2), (700, 2)])
def test_a_streamed_records_two_strands_average_as_offline(tmp_path, track_model_dir, chunk, threads):
    """--rc-average streams a long record's strands together (two rows of one stream; with --threads 2, two
    streams stepped side by side on two threads), and each strand's rows
    reach the track as they become final, the strands meeting in the middle: the track is the mean of the
    offline forward track and the offline reverse complement's, reversed, wherever the strands met, with the
    N run masked."""
    from swa_stream.pipelines.bundles import load_dna_model
    from swa_stream.tasks.dna.tokenizer import encode, reverse_complement

    rng = np.random.default_rng(chunk)
    seq = "".join(rng.choice(list("ACGT"), 333)) + "N" * 20 + "".join(rng.choice(list("ACGT"), 300))
    (tmp_path / "long.fa").write_text(f">long\n{seq}\n")
    out, rows = score(tmp_path, track_model_dir, [str(tmp_path / "long.fa")], "s", "--per-position", "--rc-average",
                      "--chunk-size", str(chunk), "--threads", str(threads))
    track = Store(out).track(0)[:, 0]
    model = load_dna_model(track_model_dir)
    tokens = encode(seq)
    with torch.no_grad():
        offline = [torch.sigmoid(model(torch.from_numpy(t.astype(np.int64))[None])[1][0, :, 0]).numpy()
                   for t in (tokens, reverse_complement(tokens))]
    want = (offline[0] + offline[1][::-1]) / 2
    is_n = np.array([c == "N" for c in seq])
    assert np.array_equal(np.isnan(track), is_n)
    np.testing.assert_allclose(track[~is_n], want[~is_n], atol=2e-6)
    assert float(rows[0]["mean_coding"]) == pytest.approx(float(np.nanmean(track)), abs=2e-6)


def test_a_track_model_reports_each_records_mean_track(tmp_path, track_model_dir, model_dir):
    """A model without classes answers with its track: each record's mean over its non-N bases, in the TSV
    (mean_<track>) and in records/track_mean, the same with or without --per-position, for records that
    batch and records that stream, both strands averaged; "nan" where no base is A, C, G or T."""
    fasta = tmp_path / "mixed.fa"
    fasta.write_text((REAL / "sequence.fa").read_text() + ">all_n\nNNNNNNNNNN\n>empty\n\n")
    chunked = ("--rc-average", "--chunk-size", "100")  # records longer than a chunk stream; shorter ones batch
    out, rows = score(tmp_path, track_model_dir, [str(fasta)], "t", "--per-position", *chunked)
    _, bare = score(tmp_path, track_model_dir, [str(fasta)], "bare", *chunked)
    store, group = Store(out), zarr.open_group(out, mode="r")
    assert "mean_coding" in rows[0] and not any(k.startswith("p_") for k in rows[0])
    stored = group["records/track_mean"][:, 0]
    lengths = [len(seq) for _, seq in SimpleFastaParser(open(fasta))]
    assert max(lengths) > 100 and min(n for n in lengths if n) < 100
    for n, row in enumerate(rows):
        track = store.track(n)[:, 0]
        if np.isnan(track).all():
            assert row["mean_coding"] == bare[n]["mean_coding"] == "nan" and np.isnan(stored[n])
            continue
        assert float(row["mean_coding"]) == pytest.approx(float(np.nanmean(track)), abs=2e-6), n
        assert float(bare[n]["mean_coding"]) == pytest.approx(float(row["mean_coding"]), abs=2e-6), n
        assert stored[n] == pytest.approx(float(np.nanmean(track)), abs=2e-6), n
    assert [r["id"] for r in rows][-2:] == ["all_n", "empty"]
    _, classified = score(tmp_path, model_dir, [str(fasta)], "c")  # a classifier reports its classes only
    assert not any(k.startswith("mean_") for k in classified[0])


# ---- streams: read once, in order ------------------------------------------------------------------------------
def test_a_fifo_stdin_and_process_substitution_are_read_as_streams(tmp_path, model_dir):
    source = REAL / "ls_orchid.fasta"
    _, expected = score(tmp_path, model_dir, [str(source)], "file")
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"gzip -c {source} > {fifo}"])  # a compressed stream, too
    _, from_fifo = score(tmp_path, model_dir, [str(fifo)], "fifo")
    writer.wait()
    with open(source, "rb") as stdin:
        result = subprocess.run(CLI + ["score-fasta", "/dev/stdin", "--out", str(tmp_path / "stdin.zarr"),
                                       "--tsv", str(tmp_path / "stdin.tsv"), "--model", model_dir],
                                stdin=stdin, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    substituted = subprocess.run(["bash", "-c", f"{shlex.join(CLI)} score-fasta <(bzip2 -c {source}) --out "
                                  f"{tmp_path / 'sub.zarr'} --tsv {tmp_path / 'sub.tsv'} --model {model_dir}"],
                                 capture_output=True, text=True)
    assert substituted.returncode == 0, substituted.stderr
    assert scores_of(from_fifo) == scores_of(expected) == scores_of(read_tsv(tmp_path / "stdin.tsv"))
    assert scores_of(read_tsv(tmp_path / "sub.tsv")) == scores_of(expected)


def _piped(argv: list[str], feed: str, cwd: Path) -> subprocess.CompletedProcess:
    """`gzip -c | swa-stream ARGV`: a real pipe into the command's stdin, its stdout and stderr caught."""
    with subprocess.Popen(["gzip", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as gz:
        result = subprocess.Popen(CLI + argv, stdin=gz.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=cwd)
        gz.stdout.close()  # the command holds the pipe's read end now
        gz.stdin.write(feed.encode())
        gz.stdin.close()
        out, err = result.communicate(timeout=300)
    return subprocess.CompletedProcess(argv, result.returncode, out, err)


def test_dash_reads_stdin_and_tsv_dash_writes_stdout(tmp_path, model_dir):
    """`zcat | score-fasta - --tsv -`, as genomics pipelines run it: the TSV on stdout equals the file run's,
    stdout carries nothing else, and the summary goes to stderr."""
    source = REAL / "ls_orchid.fasta"
    _, expected = score(tmp_path, model_dir, [str(source)], "file")
    result = _piped(["score-fasta", "-", "--out", "piped.zarr", "--tsv", "-", "--model", model_dir],
                    source.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines(), delimiter="\t"))
    assert scores_of(rows) == scores_of(expected) and {r["file"] for r in rows} == {"/dev/stdin"}
    assert "records in piped.zarr and on stdout" in result.stderr and not (tmp_path / "-").exists()
    assert json.loads((tmp_path / "piped.zarr" / "zarr.json").read_text())["attributes"]["command"].startswith(
        "swa-stream score-fasta - --out piped.zarr --tsv -")


def test_a_piped_run_stopped_by_a_bad_record_resumes_from_the_same_pipe(tmp_path, model_dir):
    """A pipe has no fingerprint and a new /proc name each run: run.json records it as "-", and resume
    checks every skipped record's content instead. A changed record is refused, not mixed in."""
    good = (REAL / "ls_orchid.fasta").read_text()
    argv = ["score-fasta", "-", "--out", "r.zarr", "--tsv", "r.tsv", "--model", model_dir, "--batch-size", "1"]
    stopped = _piped(argv, good + ">bad\nACGT1\n", tmp_path)
    assert stopped.returncode == 2 and stopped.stderr.count("\n") == 1, stopped.stderr
    logged = len(list(all_entries(tmp_path / "r.zarr.partial")))
    assert logged == good.count(">") - 1  # kept; the last good one was still waiting for its batch to close
    assert json.loads((tmp_path / "r.zarr.partial" / "run.json").read_text())["inputs"][0]["path"] == "-"
    changed = _piped(argv, good.replace("ACG", "TTT", 1) + ">late\nACGT\n", tmp_path)
    assert changed.returncode == 2 and "is not the one the unfinished run" in changed.stderr
    first = good[: good.index(">", 1)]  # the first record only: the stream ends before the logged ones do
    shorter = _piped(argv, first, tmp_path)
    assert shorter.returncode == 2 and shorter.stderr.count("\n") == 2, shorter.stderr  # "skipped 1", the error
    assert f"holds {logged - 1} finished record(s) beyond this input's 1 record(s)" in shorter.stderr
    assert "give the whole input again" in shorter.stderr and not (tmp_path / "r.tsv").exists()
    resumed = _piped(argv, good + ">late\nACGT\n", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"skipped {logged} records finished by an earlier run" in resumed.stderr
    whole = tmp_path / "whole.fa"
    whole.write_text(good + ">late\nACGT\n")
    _, fresh = score(tmp_path, model_dir, [str(whole)], "fresh", "--batch-size", "1")
    assert scores_of(read_tsv(tmp_path / "r.tsv")) == scores_of(fresh)


def test_dash_on_a_terminal_or_closed_stdin_is_one_line(tmp_path, model_dir):
    import pty

    leader, follower = pty.openpty()  # a real terminal as stdin: nothing would ever come
    try:
        result = subprocess.run(CLI + ["score-fasta", "-", "--out", str(tmp_path / "t.zarr"), "--model", model_dir],
                                stdin=follower, capture_output=True, text=True, timeout=120)
    finally:
        os.close(follower), os.close(leader)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "-: standard input is a terminal; pipe sequences in" in result.stderr
    closed = subprocess.run(CLI + ["score-fasta", "-", "--out", str(tmp_path / "c.zarr"), "--model", model_dir],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert closed.returncode == 2 and "/dev/stdin: empty file, no sequence records" in closed.stderr
    assert not (tmp_path / "t.zarr").exists() and not (tmp_path / "c.zarr").exists()


def test_a_stream_cannot_be_shared_by_several_processes(tmp_path, model_dir, capsys):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    assert main(["score-fasta", str(fifo), "--out", str(tmp_path / "o.zarr"), "--model", model_dir,
                 "--devices", "2"]) == 2
    assert "a stream can be read only once" in capsys.readouterr().err


def test_leading_blank_lines_beyond_64_kib_are_not_an_empty_file(tmp_path, model_dir):
    path = tmp_path / "blank_first.fa"
    path.write_text("\n" * 70_000 + (REAL / "ex1.fa").read_text())
    _, rows = score(tmp_path, model_dir, [str(path)], "blank")
    assert [r["id"] for r in rows] == ["chr1", "chr2"]


def test_a_bad_byte_deep_in_the_file_is_reported_at_its_true_offset_and_line(tmp_path, model_dir, capsys):
    lines = [b">deep\n"] + [b"ACGT" * 15 + b"\n"] * 3000
    data = bytearray(b"".join(lines))
    data[120_007] = 0xC3
    path = tmp_path / "deep.fa"
    path.write_bytes(bytes(data))
    assert main(["score-fasta", str(path), "--out", str(tmp_path / "d.zarr"), "--model", model_dir]) == 2
    line = data[:120_007].count(b"\n") + 1
    assert f"line {line}, byte 120,007: byte 0xc3 is not a nucleotide" in capsys.readouterr().err


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_under_torchrun_resume_a_one_process_run_and_match_it_bit_for_bit(tmp_path, model_dir):
    """2 nodes x 1 process on localhost, as torchrun starts them on two machines; the run they finish was
    begun, and killed, by one process: records are shared out by batch, so the bits do not change."""
    fasta = many_records(tmp_path, n=120, length=500)
    extra = ["--model", model_dir, "--per-position", "--batch-size", "4"]
    _, single = score(tmp_path, model_dir, [fasta], "single", *extra[2:])
    out = tmp_path / "nodes.zarr"
    argv = ["score-fasta", fasta, "--out", str(out), "--tsv", str(tmp_path / "nodes.tsv"), *extra]
    first = subprocess.Popen(CLI + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "nodes.zarr.partial" / "log.0"
    while first.poll() is None and (log.read_bytes().count(b"\n") if log.exists() else 0) < 8:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
                               "1", "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port",
                               str(port), "-m", "swa_stream.pipelines.cli", *argv, "--num-nodes", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    results = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert "skipped" in results[0][1]  # it resumed the killed run
    assert read_tsv(tmp_path / "nodes.tsv") == single
    np.testing.assert_array_equal(Store(out).group["tracks"][:], Store(tmp_path / "single.zarr").group["tracks"][:])


# ---- --windows: a classifier trained on short records scans long ones -------------------------------------------
def windowed_bundle(tmp_path, model_dir, record_length=30) -> str:
    """The tiny classifier, its config saying what length it was trained on (weights unchanged)."""
    import json
    import shutil

    folder = tmp_path / "windowed_model"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["config"]["record_length"] = record_length
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def probabilities(rows) -> np.ndarray:
    return np.array([[float(r["p_far"]), float(r["p_near"])] for r in rows])


def revcomp(seq: str) -> str:
    return seq.translate(str.maketrans("ACGTNacgtn", "TGCANtgcan"))[::-1]


def test_windows_score_as_the_same_windows_cut_by_hand(tmp_path, model_dir):
    """An independent cut: each window written out as a FASTA record of its own (the - strand's by string
    reverse complement) and scored plainly gives the same probabilities, in the same order."""
    rng = np.random.default_rng(3)
    seqs = {"a": "".join(rng.choice(list("ACGT"), 205)), "b": "ACGTN" * 5 + "".join(rng.choice(list("ACGT"), 40)),
            "short": "ACGTACGTAC"}
    src = tmp_path / "in.fa"
    src.write_text("".join(f">{name} some description\n{seq}\n" for name, seq in seqs.items()))
    width, stride = 30, 25
    expected, by_hand = [], []
    for name, seq in seqs.items():
        last = max(0, len(seq) - width)
        starts = list(range(0, last + 1, stride)) + ([last] if last % stride else [])
        for start in starts:
            end = min(len(seq), start + width)
            for strand in "+-":
                piece = seq[start:end] if strand == "+" else revcomp(seq[start:end])
                by_hand.append(f">{name}:{start + 1}-{end}({strand})\n{piece}\n")
                where = f"{name}:{start + 1}-{end}({strand})"
                expected.append((where, name, str(start), str(end), strand, len(piece)))
    (tmp_path / "cut.fa").write_text("".join(by_hand))
    _, rows = score(tmp_path, model_dir, [str(src)], "win", "--windows", str(width), "--stride", str(stride))
    _, plain = score(tmp_path, model_dir, [str(tmp_path / "cut.fa")], "cut")
    assert [(r["id"], r["seq_id"], r["start"], r["end"], r["strand"], int(r["length"])) for r in rows] == expected
    assert [r["id"] for r in plain] == [r["id"] for r in rows]
    np.testing.assert_allclose(probabilities(rows), probabilities(plain), atol=2e-6)
    assert {r["record_index"] for r in rows if r["seq_id"] == "b"} == {"1"}
    n_rows = [r for r in rows if r["seq_id"] == "b" and r["start"] == "0"]
    assert n_rows and all(float(r["n_fraction"]) == pytest.approx(5 / 30, abs=1e-4) for r in n_rows)  # its own


def test_windows_on_one_strand_and_averaged(tmp_path, model_dir):
    src = tmp_path / "in.fa"
    src.write_text(">r\n" + "ACGGTCATTAGCCA" * 8 + "\n")
    _, both = score(tmp_path, model_dir, [str(src)], "both", "--windows", "40", "--stride", "16")
    _, plus = score(tmp_path, model_dir, [str(src)], "plus", "--windows", "40", "--stride", "16", "--strand", "+")
    _, minus = score(tmp_path, model_dir, [str(src)], "minus", "--windows", "40", "--stride", "16", "--strand", "-")
    _, mean = score(tmp_path, model_dir, [str(src)], "mean", "--windows", "40", "--stride", "16", "--rc-average")
    assert [r["id"] for r in plus] == [r["id"] for r in both if r["strand"] == "+"]
    assert [r["id"] for r in minus] == [r["id"] for r in both if r["strand"] == "-"]
    assert {r["strand"] for r in mean} == {"."} and len(mean) == len(plus)
    assert [r["start"] for r in mean] == ["0", "16", "32", "48", "64", "72"]  # the last one ends at 112
    np.testing.assert_allclose(probabilities(mean), (probabilities(plus) + probabilities(minus)) / 2, atol=2e-6)


@pytest.mark.parametrize("extra, message", [
    (["--windows", "0"], "--windows must be >= 1 bp, got 0"),
    (["--windows", "30", "--stride", "0"], "--stride must be >= 1 bp, got 0"),
    (["--stride", "5"], "--stride applies to --windows W, which was not given"),
    (["--strand", "+"], "--strand applies to --windows W, which was not given"),
    (["--windows", "30", "--per-position"], "--windows and --per-position"),
    (["--windows", "30", "--strand", "-", "--rc-average"], "--strand and --rc-average"),
])
def test_window_options_that_cannot_work_are_one_line_errors(tmp_path, model_dir, capsys, extra, message):
    src = tmp_path / "in.fa"
    src.write_text(">r\nACGTACGTACGTACGTACGTACGTACGTACGTACGTACGT\n")
    assert main(["score-fasta", str(src), "--out", str(tmp_path / "o.zarr"), "--model", model_dir, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.zarr.partial").exists()


def test_a_track_model_refuses_windows(tmp_path, track_model_dir, capsys):
    src = tmp_path / "in.fa"
    src.write_text(">r\nACGTACGTACGTACGTACGTACGTACGTACGTACGTACGT\n")
    assert main(["score-fasta", str(src), "--out", str(tmp_path / "o.zarr"), "--model", track_model_dir,
                 "--windows", "20"]) == 2
    assert "has no record classes (a track model)" in capsys.readouterr().err


def test_a_long_record_for_a_short_record_model_gets_one_note(tmp_path, model_dir, capsys):
    bundle = windowed_bundle(tmp_path, model_dir, record_length=30)
    src = tmp_path / "in.fa"
    src.write_text(">fits\n" + "ACGT" * 10 + "\n>long\n" + "ACGT" * 40 + "\n>longer\n" + "ACGT" * 80 + "\n")
    score(tmp_path, bundle, [str(src)], "whole")
    err = capsys.readouterr().err
    assert err.count("note: the model was trained on 30 bp records") == 1
    assert "record 2 (long) is 160 bp: it is scored whole; --windows 30 scans it" in err
    score(tmp_path, bundle, [str(src)], "windowed", "--windows", "30")
    assert "note:" not in capsys.readouterr().err
    score(tmp_path, model_dir, [str(src)], "unsaid")  # a bundle that does not say its length: no note
    assert "note:" not in capsys.readouterr().err


def test_empty_records_have_no_windows(tmp_path, model_dir, capsys):
    src = tmp_path / "in.fa"
    src.write_text(">e\n\n>r\n" + "ACGGTCATTAGCCA" * 5 + "\n>f\n")
    out = tmp_path / "w.zarr"
    assert main(["score-fasta", str(src), "--out", str(out), "--model", model_dir, "--windows", "40",
                 "--stride", "30"]) == 0
    assert Store(out).ids == ["r:1-40(+)", "r:1-40(-)", "r:31-70(+)", "r:31-70(-)"]
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "in.fa record 1 (e) is empty: it has no windows" in err


def test_a_windowed_run_refuses_an_unfinished_run_with_other_options(tmp_path, model_dir, capsys):
    src = tmp_path / "in.fa"
    src.write_text(">r\n" + "ACGGTCATTAGCCA" * 30 + "\n")
    out = tmp_path / "w.zarr"
    args = ["score-fasta", str(src), "--out", str(out), "--model", model_dir, "--windows", "40", "--batch-size", "4"]
    (tmp_path / "w.zarr.partial").mkdir()  # an unfinished run with other options: refused, nothing mixed
    run_json = {"inputs": [], "model": "", "model_sha256": "", "options": {}}
    (tmp_path / "w.zarr.partial" / "run.json").write_text(__import__("json").dumps(run_json))
    assert main(args) == 2
    assert "an unfinished run with other" in capsys.readouterr().err
    import shutil

    shutil.rmtree(tmp_path / "w.zarr.partial")
    assert main(args) == 0
    ids = Store(out).ids
    assert len(ids) == 2 * (1 + (420 - 40 + 9) // 10) and ids[0] == "r:1-40(+)" and ids[-1] == "r:381-420(-)"


@settings(max_examples=300, deadline=None)
@given(length=st.integers(0, 400), width=st.integers(1, 120), stride=st.integers(1, 150))
def test_window_starts_cover_every_base_in_order(length, width, stride):
    from swa_stream.pipelines.score_fasta import window_starts

    starts = list(window_starts(length, width, stride))
    if not length:
        assert starts == []  # an empty record has no window (not one of 0 bp at "r:1-0")
        return
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length <= width:
        assert starts == [0]  # one window: the whole record
        return
    assert starts[-1] == length - width  # the last window ends at the record's end
    assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))
    assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1], strict=False))  # the stride, but the end
    if stride <= width:  # windows that overlap or touch cover every base
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + width] = True
        assert covered.all()
