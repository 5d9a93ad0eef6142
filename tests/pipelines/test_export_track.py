"""export-track: bedGraph and bigWig that rebuild the stored track, skip N, and refuse what they must."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyBigWig
import pytest
import zarr

from swa_stream.pipelines.cli import main
from swa_stream.pipelines.export_track import intervals
from swa_stream.pipelines.fasta_store import Store

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "fasta"
CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, model_dir):
    """A real scored store: sequence.fa (N runs) and ex1.fa (two chromosomes), with an empty record."""
    tmp = tmp_path_factory.mktemp("store")
    fasta = tmp / "in.fa"
    fasta.write_text((REAL / "sequence.fa").read_text() + ">hollow\n" + (REAL / "ex1.fa").read_text())
    out = tmp / "s.zarr"
    assert main(["score-fasta", str(fasta), "--out", str(out), "--model", model_dir, "--per-position",
                 "--chunk-size", "300"]) == 0
    return out


def rebuild_bedgraph(path: Path, store: Store) -> list[np.ndarray]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("track type=bedGraph")
    tracks = {name: np.full(int(n), np.nan) for name, n in zip(store.ids, store.lengths, strict=True)}
    for line in lines[1:]:
        chrom, start, end, value = line.split("\t")
        assert np.isnan(tracks[chrom][int(start) : int(end)]).all()  # intervals never overlap
        tracks[chrom][int(start) : int(end)] = float(value)
    return [tracks[name] for name in store.ids]


def test_bedgraph_rebuilds_the_rounded_track_and_leaves_n_out(tmp_path, store, capsys):
    out = tmp_path / "t.bedgraph"
    assert main(["export-track", str(store), "--bedgraph", str(out), "--precision", "2"]) == 0
    assert "bedGraph intervals" in capsys.readouterr().out  # the summary is on stdout
    opened = Store(store)
    for n, rebuilt in enumerate(rebuild_bedgraph(out, opened)):
        expected = np.round(opened.track(n)[:, 0].astype(np.float64), 2)
        np.testing.assert_allclose(rebuilt, expected, atol=1e-9)  # NaN where N, in both
    assert np.isnan(opened.track(0)[:, 0]).any()



def test_bedgraph_dash_is_stdout_and_bigwig_dash_is_refused(tmp_path, store):
    """`export-track S --bedgraph - | gzip`: stdout holds exactly the file's bedGraph, the summary goes to
    stderr; a bigWig needs a seekable file, so `--bigwig -` is one line before any work."""
    out = tmp_path / "t.bedgraph"
    assert main(["export-track", str(store), "--bedgraph", str(out)]) == 0
    result = subprocess.run(CLI + ["export-track", str(store), "--bedgraph", "-"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0 and result.stdout == out.read_text()
    assert result.stderr.startswith("wrote ") and "bedGraph intervals to stdout" in result.stderr
    refused = subprocess.run(CLI + ["export-track", str(store), "--bigwig", "-"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
    assert refused.returncode == 2 and refused.stdout == "" and not (tmp_path / "-").exists()
    assert refused.stderr == ("swa-stream: error: --bigwig -: a bigWig file cannot be written to standard "
                              "output; give a file name\n")

def test_runs_merge_across_read_boundaries(store):
    opened = Store(store)
    whole = list(intervals(opened, 0, 2))
    assert list(intervals(opened, 0, 2, rows=7)) == whole  # reads of 7 rows cut records and runs anywhere
    assert len(whole) < sum(opened.lengths)  # equal neighbours merged


def test_bigwig_holds_the_track_with_chromosome_sizes_from_the_store(tmp_path, store, capsys):
    out = tmp_path / "t.bw"
    assert main(["export-track", str(store), "--bigwig", str(out), "--precision", "3"]) == 0
    assert "bigWig intervals" in capsys.readouterr().out
    opened = Store(store)
    bw = pyBigWig.open(str(out))
    expected_chroms = {name: int(n) for name, n in zip(opened.ids, opened.lengths, strict=True) if n}
    assert bw.chroms() == expected_chroms  # the empty record has no chromosome
    for n, name in enumerate(opened.ids):
        if name in expected_chroms:
            values = np.array(bw.values(name, 0, expected_chroms[name]))
            expected = np.round(opened.track(n)[:, 0].astype(np.float64), 3)
            np.testing.assert_allclose(values, expected, atol=1e-6)
    bw.close()


@pytest.mark.parametrize("args, message", [
    (["--bedgraph", "X", "--track", "bogus"], "no track 'bogus' (tracks: signal)"),
    (["--bigwig", "X", "--precision", "-1"], "--precision: must be 0 to 9"),
    ([], "give --bedgraph FILE and/or --bigwig FILE"),
])
def test_bad_arguments_are_one_line(tmp_path, store, capsys, args, message):
    args = [str(tmp_path / "x") if a == "X" else a for a in args]
    assert main(["export-track", str(store), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "x").exists()


def test_outputs_that_would_destroy_something_are_refused(tmp_path, store, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    for target, message in ((tmp_path, "is a directory"), (other, "is not a bedGraph file"),
                            (store / "zarr.json", "names an input"), ("", "an empty path")):
        assert main(["export-track", str(store), "--bedgraph", str(target)]) == 2
        assert message in capsys.readouterr().err
    assert other.read_text() == "my notes\n" and (store / "zarr.json").stat().st_size > 0


def layout_1_store(path: Path, tracks: dict[int, np.ndarray], ids: list[str]) -> Path:
    """A store as swa-stream wrote it before the ragged layout: one tracks/<n> array per record."""
    group = zarr.open_group(path, mode="w")
    group.create_array("records/id", shape=(len(ids),), dtype=str)[:] = np.array(ids)
    lengths = [len(tracks.get(n, np.zeros(5))) for n in range(len(ids))]
    group.create_array("records/length", shape=(len(ids),), dtype="int64")[:] = lengths
    for n, values in tracks.items():
        group.create_array(f"tracks/{n}", shape=(len(values), 1), dtype="float32")[:] = values[:, None]
    group.attrs.update({"tracks": ["signal"], "classes": ["a", "b"]})
    return path


def test_a_store_of_the_older_layout_still_exports(tmp_path, capsys):
    values = {0: np.array([0.1, 0.1, 0.5, 0.5, 0.5], np.float32), 1: np.array([0.9, 0.2], np.float32)}
    old = layout_1_store(tmp_path / "old.zarr", values, ["a", "b"])
    out = tmp_path / "old.bedgraph"
    assert main(["export-track", str(old), "--bedgraph", str(out), "--precision", "1"]) == 0
    assert out.read_text().splitlines()[1:] == ["a\t0\t2\t0.1", "a\t2\t5\t0.5", "b\t0\t1\t0.9", "b\t1\t2\t0.2"]


def test_a_store_missing_one_records_track_is_an_error_not_a_flat_track(tmp_path, capsys):
    old = layout_1_store(tmp_path / "gap.zarr", {0: np.ones(5, np.float32)}, ["a", "b"])
    out = tmp_path / "gap.bedgraph"
    assert main(["export-track", str(old), "--bedgraph", str(out)]) == 2
    assert "record 2 (b) has no track" in capsys.readouterr().err and not out.exists()


def test_a_ragged_store_with_a_damaged_index_is_an_error(tmp_path, store, capsys):
    import shutil

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(store, damaged)
    index = zarr.open_group(damaged, mode="r+")["records/track_offset"]
    index[1] = index[1] - 1
    assert main(["export-track", str(damaged), "--bedgraph", str(tmp_path / "d.bg")]) == 2
    assert "does not match the records" in capsys.readouterr().err


def test_an_unwritable_folder_fails_before_reading_any_track(tmp_path, store, tmpfs):
    mount = tmpfs("size=64k,ro")
    result = subprocess.run(CLI + ["export-track", str(store), "--bedgraph", str(mount / "t.bg")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "read-only file system" in result.stderr


def test_bigwig_refuses_duplicate_record_ids_that_bedgraph_accepts(tmp_path, model_dir, capsys):
    out = tmp_path / "dups.zarr"
    assert main(["score-fasta", str(REAL / "dups.fasta"), "--out", str(out), "--model", model_dir,
                 "--per-position"]) == 0
    assert main(["export-track", str(out), "--bigwig", str(tmp_path / "d.bw")]) == 2
    assert "record id 'alpha' occurs twice" in capsys.readouterr().err and not (tmp_path / "d.bw").exists()
    assert main(["export-track", str(out), "--bedgraph", str(tmp_path / "d.bg")]) == 0
