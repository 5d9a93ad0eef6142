"""Bad, odd and hostile inputs (issue #15): every case either succeeds with a correct result or exits 2 with
one line `swa-stream: error: <file>: <problem>`, and nothing written before is lost.

Faults are real: a read-only tmpfs mount, a tiny tmpfs that fills up, a reader without root's rights
(setpriv), FIFOs, a closed stdin, a pickle that would run a command. Speech cases use the shipped
asr-demo model on the shipped example, whose words are known (EXAMPLE_PHRASES)."""

import json
import os
import shutil
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from swa_stream.pipelines.cli import main
from swa_stream.tasks.asr.synthetic import EXAMPLE_PHRASES

REPO = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("swa-stream"))
EXAMPLE = str(resources.files("swa_stream.pipelines").joinpath("examples", "asr_demo.wav"))


def one_error_line(err: str, starts: str = "") -> None:
    assert err.count("\n") == 1 and err.startswith(f"swa-stream: error: {starts}") and "Traceback" not in err, err


def finals(out: str) -> list[str]:
    return [d["text"] for d in map(json.loads, out.splitlines()) if d["type"] == "final"]


@pytest.fixture(scope="module")
def speech():
    samples, rate = sf.read(EXAMPLE, dtype="float32")
    return samples, rate


def as_nobody(args: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI without root's rights, so that file permissions apply (root reads anything)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop privileges")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", EXE, *args],
                          capture_output=True, text=True, timeout=300)


# ---- audio ----------------------------------------------------------------------------------------
def test_nan_and_inf_samples_are_transcribed_as_silence_with_a_count(speech, tmp_path, capsys):
    samples, rate = speech
    bad = samples.copy()
    bad[[100, 2000, 30000]] = np.nan
    bad[[40000, 40001]] = [np.inf, -np.inf]
    zeros = np.where(np.isfinite(bad), bad, 0).astype(np.float32)  # the repair, made independently
    sf.write(tmp_path / "bad.wav", bad, rate, subtype="FLOAT")
    sf.write(tmp_path / "zeros.wav", zeros, rate, subtype="FLOAT")
    assert main(["transcribe", str(tmp_path / "zeros.wav"), "--format", "jsonl"]) == 0
    expected = finals(capsys.readouterr().out)
    assert expected == list(EXAMPLE_PHRASES)
    assert main(["transcribe", str(tmp_path / "bad.wav"), "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    assert finals(out) == expected
    assert "5 samples were NaN or infinite (the first at 0.006 s)" in err


def test_nan_samples_in_a_wav_stream_are_counted_too(speech, tmp_path):
    samples, rate = speech
    bad = samples.copy()
    bad[5000:5010] = np.nan
    sf.write(tmp_path / "bad.wav", bad, rate, subtype="FLOAT")
    with open(tmp_path / "bad.wav", "rb") as f:  # a pipe: the WAV is parsed as a stream
        done = subprocess.run(["bash", "-c", f"cat | {EXE} transcribe -"], stdin=f, capture_output=True, text=True,
                              timeout=300)
    assert done.returncode == 0 and done.stdout.splitlines() == list(EXAMPLE_PHRASES)
    assert "stdin: 10 samples were NaN or infinite" in done.stderr


def test_training_audio_with_nan_is_refused(speech, tmp_path):
    from swa_stream.errors import SWAStreamError
    from swa_stream.tasks.asr.audio import read_audio

    samples, rate = speech
    samples = samples.copy()
    samples[7] = np.nan
    sf.write(tmp_path / "bad.wav", samples, rate, subtype="FLOAT")
    with pytest.raises(SWAStreamError, match="bad.wav: 1 samples are NaN or infinite"):
        read_audio(tmp_path / "bad.wav")


def test_a_rate_sharing_no_factor_with_16k_works_in_small_memory(speech, tmp_path, capsys):
    """96001 Hz: the exact ratio's kernel would be 16000 x 96,000 taps (6 GB); the bounded one is tiny. The
    file is made by plain linear interpolation, independent of the resampler under test."""
    from swa_stream.tasks.asr.audio import MAX_KERNEL, Resampler

    samples, rate = speech
    t = np.arange(int(len(samples) * 96001 / rate)) / 96001
    sf.write(tmp_path / "odd.wav", np.interp(t, np.arange(len(samples)) / rate, samples), 96001, subtype="FLOAT")
    assert Resampler(96001, 16000).kernel.numel() <= MAX_KERNEL
    assert main(["transcribe", str(tmp_path / "odd.wav")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == list(EXAMPLE_PHRASES)
    assert "96001 Hz is resampled as 96000 Hz" in err


@pytest.mark.parametrize("rate", ["2147483647", "0", "-8000", "999"])
def test_absurd_raw_rates_are_one_line(rate, capsys):
    assert main(["transcribe", "-", "--raw", "--sample-rate", rate]) == 2
    one_error_line(capsys.readouterr().err, "--sample-rate: sample rate")


def test_gsm_610_wav_is_decoded(speech, tmp_path, capsys):
    samples, rate = speech
    t = np.arange(len(samples) // 2) / 8000
    sf.write(tmp_path / "gsm.wav", np.interp(t, np.arange(len(samples)) / rate, samples), 8000, subtype="GSM610")
    assert main(["transcribe", str(tmp_path / "gsm.wav")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == EXAMPLE_PHRASES[0]  # lossy at 8 kHz: the first is sure


@pytest.mark.parametrize("args, message", [
    (["--chunk-ms", "inf"], "--chunk-ms: must be in (0, 600000]"),
    (["--chunk-ms", "-1"], "--chunk-ms: must be in (0, 600000]"),
    (["--chunk-ms", "nan"], "--chunk-ms: must be in (0, 600000]"),
    (["--endpoint-silence", "-1"], "--endpoint-silence: must be a number of seconds >= 0"),
    (["--endpoint-silence-no-speech", "nan"], "--endpoint-silence-no-speech: must be a number of seconds >= 0"),
    (["--max-segment", "-0.5"], "--max-segment: must be a number of seconds >= 0"),
])
def test_arguments_that_cannot_be_meant_are_one_line(args, message, capsys):
    assert main(["transcribe", EXAMPLE, *args]) == 2
    one_error_line(capsys.readouterr().err, message)


def test_stdin_not_open_is_one_line():
    done = subprocess.run(["bash", "-c", f"{EXE} transcribe - <&-"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    one_error_line(done.stderr, "stdin: not open")


def test_an_unreadable_wav_says_permission_denied(tmp_path):
    wav = tmp_path / "secret.wav"
    shutil.copy(EXAMPLE, wav)
    wav.chmod(0o000)
    tmp_path.chmod(0o755)
    done = as_nobody(["transcribe", str(wav)])
    assert done.returncode == 2
    one_error_line(done.stderr, f"{wav}: cannot read: permission denied")


def test_a_directory_is_called_a_directory(tmp_path, capsys):
    assert main(["transcribe", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, f"{tmp_path}: is a directory")


def test_a_fifo_and_process_substitution_are_streams(tmp_path, capsys):
    fifo = tmp_path / "talk.wav"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(Path(EXAMPLE).read_bytes()))
    writer.start()
    assert main(["transcribe", str(fifo)]) == 0
    writer.join()
    assert capsys.readouterr().out.splitlines() == list(EXAMPLE_PHRASES)
    for command in (f"{EXE} transcribe <(cat {EXAMPLE})", f"cat {EXAMPLE} | {EXE} transcribe /dev/stdin"):
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.splitlines() == list(EXAMPLE_PHRASES), done.stderr


# ---- export and demo-data -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint as Lightning writes it for a GenomicsTask built by the CLI (hyperparameters are dicts)."""
    from swa_stream.tasks.registry import schema

    encoder = {"d_model": 64, "n_heads": 4, "n_layers": 1, "window": [4, 0]}  # 200 KB of weights
    hparams = {"_class_path": "swa_stream.tasks.dna.module.GenomicsTask", "encoder": encoder,
               "labels": ["a", "b"], "stem_kernel": 3, "track_weight": 0.2}
    dna = schema("dna")
    model = dna.build(dna.from_task_args(hparams))
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": hparams, "epoch": 0}, path)
    return path


def test_export_writes_a_bundle_that_loads_and_leaves_no_temporary_files(checkpoint, tmp_path, capsys):
    from swa_stream.pipelines.bundles import load_dna_model

    assert main(["export", str(checkpoint), "--out", str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.json", "model.safetensors"]
    model = load_dna_model(tmp_path / "b")
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[f"model.{k}"]) for k, v in model.state_dict().items())
    assert model.stem.kernel == 3 and model.classes == ["a", "b"]


def test_export_refuses_a_file_the_checkpoint_itself_and_read_only_places(checkpoint, tmp_path, tmpfs, capsys):
    (tmp_path / "file").write_text("mine")
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "file")]) == 2
    one_error_line(capsys.readouterr().err, f"{tmp_path / 'file'}: exists and is not a folder")
    assert (tmp_path / "file").read_text() == "mine"
    inside = tmp_path / "b" / "model.safetensors"
    inside.parent.mkdir()
    shutil.copy(checkpoint, inside)
    assert main(["export", str(inside), "--out", str(tmp_path / "b")]) == 2
    one_error_line(capsys.readouterr().err, f"{inside}: is the checkpoint being exported")
    read_only = tmpfs("ro")
    assert main(["export", str(checkpoint), "--out", str(read_only / "new" / "bundle")]) == 2
    one_error_line(capsys.readouterr().err, f"{read_only / 'new' / 'bundle'}: cannot write: read-only file system")


def test_export_onto_a_full_disk_keeps_the_old_bundle_whole(checkpoint, tmp_path, tmpfs, capsys):
    """The old bundle is smaller than the new one, and the disk holds only the old: the export fails with one
    line, and the old files are exactly as they were, with no temporary file left behind."""
    from swa_stream.bundle import save_bundle
    from swa_stream.tasks.registry import schema

    small = tmpfs("size=64k")
    dna = schema("dna")
    old = dna.build({"encoder": {"d_model": 8, "n_heads": 2, "n_layers": 1, "window": [2, 0]}, "classes": ["a", "b"]})
    save_bundle(small / "b", old, "dna", dna.model_config(old))
    before = {p.name: p.read_bytes() for p in (small / "b").iterdir()}
    shutil.copy(checkpoint, tmp_path / "big.ckpt")
    assert main(["export", str(tmp_path / "big.ckpt"), "--out", str(small / "b")]) == 2
    one_error_line(capsys.readouterr().err, f"{small / 'b'}: cannot write: disk full")
    assert {p.name: p.read_bytes() for p in (small / "b").iterdir()} == before


def test_demo_data_to_a_read_only_place_is_one_line(tmpfs, capsys):
    read_only = tmpfs("ro")
    assert main(["demo-data", "dna", "--out", str(read_only / "data"), "--n-train", "2"]) == 2
    one_error_line(capsys.readouterr().err, f"{read_only / 'data'}: cannot write: read-only file system")


# ---- bundles --------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(classes=5), "config.json: classes: expected a list, got 5"),
    (lambda c: c.update(classes=["a", 2]), "config.json: classes: expected a list of strings"),
    (lambda c: c["encoder"].update(dropout="0.1"), "config.json: encoder.dropout: must be a number, got '0.1'"),
    (lambda c: c.update(stem_kernel=4), "config.json: stem_kernel: must be 0 (no stem) or an odd width"),
    (lambda c: c.update(encoder=[]), "config.json: encoder: expected a mapping"),
])
def test_wrong_types_in_a_bundle_name_the_field(checkpoint, tmp_path, capsys, edit, message):
    assert main(["export", str(checkpoint), "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "config.json").read_text())
    edit(meta["config"])
    (tmp_path / "config.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["score-fasta", str(REPO / "pipelines/examples/dna_demo.fa"), "--out", str(tmp_path / "s.zarr"),
                 "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    one_error_line(err)
    assert message in err


def test_wrong_labels_in_an_asr_bundle_name_the_field(tmp_path, capsys):
    bundle = tmp_path / "asr"
    shutil.copytree(REPO / "pipelines/models/asr-demo", bundle)
    meta = json.loads((bundle / "config.json").read_text())
    meta["config"]["labels"] = 5
    (bundle / "config.json").write_text(json.dumps(meta))
    assert main(["transcribe", EXAMPLE, "--model", str(bundle)]) == 2
    one_error_line(capsys.readouterr().err, f"{bundle / 'config.json'}: labels: expected a list, got 5")


# ---- fit / test -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dna_data")
    assert main(["demo-data", "dna", "--out", str(root), "--n-train", "8", "--n-val", "4", "--n-test", "4"]) == 0
    return root


def lightning(capfd, command, *args) -> tuple[int, str]:
    """Run a training command in process; stderr as the file descriptor saw it (Lightning's own handlers
    write there, past pytest's sys.stderr)."""
    capfd.readouterr()
    code = main([command, "--config", str(REPO / "configs/dna_demo.yaml"), *args, "--trainer.max_steps", "1"])
    return code, capfd.readouterr().err


def test_data_folders_that_cannot_train_are_one_line_with_nothing_before(tmp_path, capfd):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = lightning(capfd, "fit", "--data.root", str(empty))
    assert code == 2
    one_error_line(err, str(empty))
    no_labels = tmp_path / "no_labels"
    no_labels.mkdir()
    for split in ("train", "val", "test"):
        (no_labels / f"{split}.fa").write_text(">a\nACGT\n>b\nACGA\n")
    code, err = lightning(capfd, "fit", "--data.root", str(no_labels))
    assert code == 2
    one_error_line(err, str(no_labels / "train.labels.tsv"))
    one_class = tmp_path / "one_class"
    shutil.copytree(no_labels, one_class)
    for split in ("train", "val", "test"):
        (one_class / f"{split}.labels.tsv").write_text("a\tx\nb\tx\n")
    code, err = lightning(capfd, "fit", "--data.root", str(one_class))
    assert code == 2
    one_error_line(err, f"{one_class}: the labels name one class only ('x')")


class Payload:
    """A pickle that runs a command when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind, message", [
    ("empty", "empty file, not a checkpoint"),
    ("damaged", "damaged or not a checkpoint"),
    ("pickle", "it holds Python objects that would have to run to load it"),
    ("folder", "is a directory, not a checkpoint file"),
])
def test_bad_checkpoints_are_refused_without_running_them(data_root, tmp_path, capfd, kind, message):
    ckpt = tmp_path / "x.ckpt"
    marker = tmp_path / "ran"
    if kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "damaged":
        ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "pickle":
        torch.save({"state_dict": {}, "x": Payload(marker)}, ckpt)
    else:
        ckpt.mkdir()
    for command in ("test", "fit"):
        code, err = lightning(capfd, command, "--data.root", str(data_root), "--ckpt_path", str(ckpt))
        assert code == 2
        one_error_line(err, f"{ckpt}: ")
        assert message in err and "weights_only" not in err
    assert main(["export", str(ckpt), "--out", str(tmp_path / "b")]) == 2
    assert not marker.exists() and not (tmp_path / "b").exists()
