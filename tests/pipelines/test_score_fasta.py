"""score-fasta: every record scored, in order, exact for any chunk size, resumable, and the same on 2 processes."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from swa_stream import SWAConfig
from swa_stream.bundle import save_bundle
from swa_stream.pipelines.cli import main
from swa_stream.tasks.dna.model import DNAModel

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "fasta"
REAL_FILES = sorted(str(p) for p in REAL.glob("*") if p.suffix in {".fa", ".fasta", ".fna"})
CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = DNAModel(SWAConfig(d_model=16, n_heads=2, n_layers=2, window=(8, 8)), ["far", "near"])
    path = tmp_path_factory.mktemp("model")
    save_bundle(path, model, "dna", {"encoder": model.cfg.to_dict(), "classes": model.classes, "tracks": model.tracks})
    return str(path)


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
    assert list(rows[0]) == ["file", "record_index", "id", "length", "p_far", "p_near"]
    dups = [r["id"] for r in rows if r["file"].endswith("dups.fasta")]
    assert dups == ["alpha", "beta", "gamma", "alpha", "delta"]
    group = zarr.open_group(out, mode="r")
    assert group["records/probs"].shape == (len(rows), 2)
    assert list(group["records/length"][:]) == [int(r["length"]) for r in rows]
    assert group["tracks/0"].shape == (int(rows[0]["length"]), 1)
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
    tracks_whole = zarr.open_group(tmp_path / "whole.zarr", mode="r")["tracks/6"][:]
    np.testing.assert_allclose(zarr.open_group(out, mode="r")["tracks/6"][:], tracks_whole, atol=1e-5)


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
    cmd = CLI + ["score-fasta", fasta, "--out", str(out), "--tsv", str(tmp_path / "resumed.tsv"),
                 "--model", model_dir, "--batch-size", "1", "--per-position"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = tmp_path / "resumed.zarr.partial" / "done"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(done.glob("*.json")) if done.exists() else []) < 20:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list(done.glob("*.json")))
    assert 0 < finished_before < 300 and not out.exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {finished_before} records" in rerun.stderr
    _, fresh = score(tmp_path, model_dir, [fasta], "fresh", "--batch-size", "1", "--per-position")
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
    one, two = zarr.open_group(tmp_path / "one.zarr", mode="r"), zarr.open_group(tmp_path / "two.zarr", mode="r")
    for i in (0, 1, 50, 99):
        np.testing.assert_array_equal(one[f"tracks/{i}"][:], two[f"tracks/{i}"][:])


def test_an_existing_complete_store_is_not_overwritten(tmp_path, model_dir):
    score(tmp_path, model_dir, [str(REAL / "ex1.fa")], "done")
    code = main(["score-fasta", str(REAL / "ex1.fa"), "--out", str(tmp_path / "done.zarr"), "--model", model_dir])
    assert code == 2


def test_bedgraph_export_reconstructs_the_rounded_track(tmp_path, model_dir, monkeypatch):
    from swa_stream.pipelines import score_fasta

    monkeypatch.setattr(score_fasta, "TRACK_CHUNK", 7)  # runs must merge across chunk boundaries
    path = tmp_path / "in.fa"
    path.write_text(">a\n" + "A" * 40 + "CGTACGGT" + "\n>b\nNNNNNNNNNNNNNNNNNNNNNNN\n")
    out, rows = score(tmp_path, model_dir, [str(path)], "bg", "--per-position")
    bedgraph = tmp_path / "t.bedgraph"
    assert main(["export-track", str(out), "--bedgraph", str(bedgraph), "--precision", "2"]) == 0
    lines = bedgraph.read_text().splitlines()
    assert lines[0].startswith("track type=bedGraph")
    group = zarr.open_group(out, mode="r")
    for n, row in enumerate(rows):
        rebuilt = np.full(int(row["length"]), np.nan)
        for line in lines[1:]:
            chrom, start, end, value = line.split("\t")
            if chrom == row["id"]:
                rebuilt[int(start) : int(end)] = float(value)
        np.testing.assert_allclose(rebuilt, np.round(group[f"tracks/{n}"][:, 0].astype(np.float64), 2), atol=1e-9)
    b_lines = [line for line in lines if line.startswith("b\t")]
    assert len(b_lines) < 23  # the all-N record's track is nearly flat: equal neighbours merged


def test_bedgraph_needs_per_position_tracks(tmp_path, model_dir):
    out, _ = score(tmp_path, model_dir, [str(REAL / "ex1.fa")], "notrack")
    assert main(["export-track", str(out), "--bedgraph", str(tmp_path / "x.bg")]) == 2
