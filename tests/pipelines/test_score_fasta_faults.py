"""score-fasta under faults: kill -9 at random moments, a full disk, a read-only folder, two runs on one
--out, a model or input changed between a kill and the rerun, a crash inside finalising. Nothing written
earlier is lost, nothing is mixed, and every refusal is one line before any work."""

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from swa_stream.pipelines.cli import main
from swa_stream.pipelines.fasta_store import Store

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "fasta"
CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]

# A process that has imported score-fasta forks a child per run, so a kill can land anywhere in the work
# without each run paying for torch's import. The child is a real process; the test kills it with SIGKILL.
FORK_SERVER = r"""
import json, os, sys
os.environ["OMP_NUM_THREADS"] = "1"
from swa_stream.pipelines.cli import main
import swa_stream.pipelines.score_fasta  # imported once here, not in each child
for line in sys.stdin:
    command, value = line.split(" ", 1)
    if command == "wait":  # the test says when to reap, so a pid it kills is never reused meanwhile
        print(os.waitpid(int(value), 0)[1], flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import torch
            torch.set_num_threads(1)
            argv = json.loads(value)
            target = os.devnull if command == "quiet" else argv[-1] + ".stderr"
            log = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(log, 1), os.dup2(log, 2)
            code = main(argv[:-1])
        finally:
            os._exit(code)
    print(pid, flush=True)
"""


class ForkServer:
    def __init__(self):
        self.proc = subprocess.Popen(CLI[:1] + ["-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def _ask(self, line: str) -> int:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def start(self, argv: list[str], stderr_to: Path | None = None) -> int:
        """A child running `swa-stream argv`; its output goes to stderr_to + ".stderr", or nowhere."""
        command = "quiet" if stderr_to is None else "log"
        return self._ask(f"{command} {json.dumps([*argv, str(stderr_to or '')])}")

    def wait(self, pid: int) -> int:
        return self._ask(f"wait {pid}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


@pytest.fixture
def fork_server():
    server = ForkServer()
    yield server
    server.close()


def read_tsv(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def fasta_of(tmp_path, n=40, seed=1, name="k.fa", lengths=(80, 400)):
    rng = np.random.default_rng(seed)
    path = tmp_path / name
    with open(path, "w") as f:
        for i in range(n):
            length = int(rng.integers(*lengths))
            f.write(f">k{i}\n" + "".join("ACGTN"[j] for j in rng.choice(5, length, p=[.24] * 4 + [.04])) + "\n")
    return path


def args(fasta, out, model_dir, *extra):
    out = Path(out)
    return ["score-fasta", str(fasta), "--out", str(out), "--tsv", str(out.with_suffix(".tsv")),
            "--model", model_dir, *extra]


def assert_same_result(a: Path, b: Path):
    assert read_tsv(a.with_suffix(".tsv")) == read_tsv(b.with_suffix(".tsv"))
    sa, sb = Store(a), Store(b)
    assert sa.ids == sb.ids
    np.testing.assert_array_equal(sa.group["tracks"][:], sb.group["tracks"][:])


def test_kill_9_at_random_moments_never_loses_or_mixes_a_record(tmp_path, model_dir, fork_server):
    fasta = fasta_of(tmp_path, lengths=(20, 900))  # records over 512 bp stream, shorter ones share batches
    extra = ["--per-position", "--rc-average", "--chunk-size", "512", "--batch-size", "4"]
    clean = tmp_path / "clean.zarr"
    assert main(args(fasta, clean, model_dir, *extra)) == 0
    out = tmp_path / "killed.zarr"
    rng, kills, completed = random.Random(14), 0, 0
    while kills < 24:
        log = tmp_path / f"child{kills}-{completed}"
        pid = fork_server.start(args(fasta, out, model_dir, *extra), stderr_to=log)
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(pid, signal.SIGKILL)  # a child that already finished is a zombie and ignores it
        status = fork_server.wait(pid)
        partial = out.with_name(out.name + ".partial")
        if os.WIFSIGNALED(status) and out.exists() and not (partial / "complete").exists():
            # killed after its store and TSV were final (while it cleaned up, or on its way out): a finished run
            kills += 1
            assert_same_result(out, clean)
            assert not partial.exists() or not any(partial.iterdir())  # at most the emptied folder is left
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(out)
            out.with_suffix(".tsv").unlink()
        elif os.WIFSIGNALED(status):
            kills += 1
            assert not out.exists() or (out / "zarr.json").is_file()
        else:
            said = Path(f"{log}.stderr").read_text()
            assert os.WEXITSTATUS(status) == 0, said
            completed += 1
            assert_same_result(out, clean)
            shutil.rmtree(out)  # and start again, to kill more
            out.with_suffix(".tsv").unlink()
    if not out.exists():
        assert main(args(fasta, out, model_dir, *extra)) == 0
    assert_same_result(out, clean)
    assert not out.with_name(out.name + ".partial").exists()


def killed_midway(tmp_path, fasta, out, model_dir, *extra):
    """Start a real run and kill -9 it once some records are logged."""
    proc = subprocess.Popen(CLI + args(fasta, out, model_dir, *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = Path(f"{out}.partial") / "log.0"
    deadline = time.time() + 120
    while time.time() < deadline and (log.read_bytes().count(b"\n") if log.exists() else 0) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert log.read_bytes().count(b"\n") >= 3 and not Path(out).exists()


def slow_input(tmp_path):
    return fasta_of(tmp_path, n=400, seed=2, name="slow.fa")


def test_a_model_re_exported_between_kill_and_rerun_is_refused(tmp_path, model_dir, save_model, capsys):
    model = Path(shutil.copytree(model_dir, tmp_path / "model"))
    fasta, out = slow_input(tmp_path), tmp_path / "m.zarr"
    killed_midway(tmp_path, fasta, out, str(model), "--batch-size", "1")
    save_model(model, seed=7)  # same folder, other weights
    assert main(args(fasta, out, str(model), "--batch-size", "1")) == 2
    assert "other model weights" in capsys.readouterr().err and not out.exists()


def test_an_input_edited_in_place_with_size_and_mtime_kept_is_refused(tmp_path, model_dir, capsys):
    fasta, out = slow_input(tmp_path), tmp_path / "e.zarr"
    killed_midway(tmp_path, fasta, out, model_dir, "--batch-size", "1")
    before = fasta.stat()
    data = bytearray(fasta.read_bytes())
    data[data.index(b"\n") + 1] = ord("G") if data[data.index(b"\n") + 1] != ord("G") else ord("C")
    fasta.write_bytes(bytes(data))
    os.utime(fasta, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert main(args(fasta, out, model_dir, "--batch-size", "1")) == 2
    assert "changed since" in capsys.readouterr().err and not out.exists()


def test_a_stream_whose_records_changed_is_refused_record_by_record(tmp_path, model_dir, capsys):
    """A stream has no fingerprint: each skipped record's content hash is checked instead."""
    good = fasta_of(tmp_path, n=30, seed=3, name="good.fa").read_text()
    out = tmp_path / "s.zarr"

    def run_on(text):
        fifo = tmp_path / "in.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        writer = subprocess.Popen(["sh", "-c", f"cat > {fifo}"], stdin=subprocess.PIPE)
        writer.stdin.write(text.encode())
        writer.stdin.close()
        code = main(args(fifo, out, model_dir, "--batch-size", "1"))
        writer.wait()
        return code, capsys.readouterr().err

    code, err = run_on(good + ">bad\nACGTX\n")  # fails at the end: 29 records scored and logged, the 30th
    # was still waiting for its batch
    assert code == 2 and "'X' is not a nucleotide" in err
    records = good.split(">")
    records[3] = records[3].replace("A", "C", 1)
    code, err = run_on(">".join(records))
    assert code == 2 and "record 3 (k2) is not the one" in err
    code, err = run_on(good)
    assert code == 0 and "skipped 29 records" in err
    assert len(read_tsv(out.with_suffix(".tsv"))) == 30


def test_a_second_run_on_the_same_out_is_told_another_run_holds_it(tmp_path, model_dir, fork_server):
    fasta, out = fasta_of(tmp_path, n=1000, seed=5), tmp_path / "c.zarr"
    first = fork_server.start(args(fasta, out, model_dir, "--batch-size", "1"), tmp_path / "first")
    log = Path(f"{out}.partial") / "log.0"
    deadline = time.time() + 120
    while time.time() < deadline and not log.exists():
        time.sleep(0.005)
    second = fork_server.start(args(fasta, out, model_dir, "--batch-size", "1"), tmp_path / "second")
    second_status = fork_server.wait(second)
    first_status = fork_server.wait(first)
    second_err = (tmp_path / "second.stderr").read_text()
    assert os.WEXITSTATUS(second_status) == 2, "the first run ended before the second started: a longer input?"
    assert "another score-fasta run is writing this --out now" in second_err
    assert second_err.count("\n") == 1
    assert os.WEXITSTATUS(first_status) == 0, (tmp_path / "first.stderr").read_text()
    assert len(read_tsv(out.with_suffix(".tsv"))) == 1000


def test_a_crash_between_renaming_the_store_and_removing_partial_is_completed(tmp_path, model_dir, capsys):
    fasta, out = fasta_of(tmp_path, n=5), tmp_path / "f.zarr"
    assert main(args(fasta, out, model_dir)) == 0
    tsv_before = out.with_suffix(".tsv").read_text()
    partial = Path(f"{out}.partial")  # what that crash leaves: the store renamed, the folder still there
    partial.mkdir()
    (partial / "complete").write_text("store.zarr and the TSV are complete\n")
    (partial / "log.0").write_text("")
    assert main(args(fasta, out, model_dir)) == 0
    assert "completed its last step" in capsys.readouterr().err
    assert not partial.exists() and out.with_suffix(".tsv").read_text() == tsv_before
    assert len(Store(out).ids) == 5


def test_finish_removes_the_partial_folders_marker_last(tmp_path, monkeypatch):
    """finish removes the partial folder's marker after everything else in it, so a crash in the middle of the
    clean-up still says "complete", and the next run finishes the clean-up instead of refusing an --out that
    exists (the kill -9 test above met that refusal once)."""
    from swa_stream.pipelines import fasta_store

    run = fasta_store.RunFolder(tmp_path / "f.zarr", {})
    run.store_path.mkdir(parents=True)
    (run.store_path / "zarr.json").write_text("{}")
    for i in range(20):
        (run.partial / f"log.{i}").write_text("")
    (run.partial / "rows").mkdir()
    (run.partial / "rows" / "0").write_text("")
    fasta_store.mark_complete(run)
    removed, unlink = [], os.unlink

    def recorded(path, *args, **kwargs):
        removed.append(os.path.basename(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", recorded)
    fasta_store.finish(run)
    assert removed[-1] == "complete" and len(removed) == 22
    assert not run.partial.exists() and (run.out / "zarr.json").is_file()


def test_outputs_naming_inputs_or_each_other_are_refused_before_any_work(tmp_path, model_dir, capsys):
    fasta = fasta_of(tmp_path, n=3)
    original = fasta.read_bytes()
    out = tmp_path / "o.zarr"
    for tsv, message in ((fasta, "--tsv names an input"), (out, "--tsv names another output"),
                         (Path(f"{out}.partial") / "x.tsv", "--tsv names another output"),
                         (tmp_path, "--tsv is a directory")):
        assert main(["score-fasta", str(fasta), "--out", str(out), "--tsv", str(tsv), "--model", model_dir]) == 2
        assert message in capsys.readouterr().err
    assert main(["score-fasta", str(fasta), "--out", "", "--model", model_dir]) == 2
    assert "--out: an empty path" in capsys.readouterr().err
    assert fasta.read_bytes() == original and not out.exists() and not Path(f"{out}.partial").exists()


def test_a_read_only_folder_fails_before_scoring(tmp_path, model_dir, tmpfs, capsys):
    ro = tmpfs("size=64k,ro")
    out = tmp_path / "r.zarr"
    result = subprocess.run(CLI + ["score-fasta", str(fasta_of(tmp_path)), "--out", str(out), "--tsv",
                                   str(ro / "r.tsv"), "--model", model_dir], capture_output=True, text=True)
    assert result.returncode == 2 and "read-only file system" in result.stderr and "Traceback" not in result.stderr
    assert not Path(f"{out}.partial").exists()  # refused before any work
    assert main(["score-fasta", str(fasta_of(tmp_path)), "--out", str(ro / "r.zarr"), "--model", model_dir]) == 2
    assert f"{ro / 'r.zarr'}: cannot write: read-only file system" in capsys.readouterr().err


def open_files_under(folder) -> list[str]:
    """Files under `folder` that this process holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_a_full_disk_is_one_line_and_the_rerun_after_freeing_space_completes(tmp_path, model_dir, tmpfs, capsys):
    disk = tmpfs("size=1m")
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 120 * 1024))  # leave about 120 KiB
    fasta = fasta_of(tmp_path, n=200, seed=4)
    argv = args(fasta, disk / "d.zarr", model_dir, "--per-position", "--rc-average")
    assert main(argv) == 2  # an OSError would escape main as a traceback
    err = capsys.readouterr().err
    assert "disk full" in err and err.count("\n") == 1
    assert not open_files_under(disk)  # the failed run closed what it had open (else the disk stays busy)
    filler.unlink()
    assert main(argv) == 0
    clean = tmp_path / "clean.zarr"
    assert main(args(fasta, clean, model_dir, "--per-position", "--rc-average")) == 0
    assert_same_result(disk / "d.zarr", clean)


def test_a_temp_file_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path, model_dir):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    fasta, out = fasta_of(tmp_path, n=3), tmp_path / "t.zarr"
    stale = tmp_path / f".t.tsv.tmp-{dead.pid}"
    stale.write_text("half a TSV")
    assert main(args(fasta, out, model_dir)) == 0
    assert not stale.exists() and len(read_tsv(out.with_suffix(".tsv"))) == 3
