"""`swa-stream info` and `swa-stream demo`, and how the CLI reports user errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swa_stream.pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_info_reports_field_latency_state_and_cost(capsys):
    assert main(["info", "--config", str(CONFIGS / "encoder_speech.yaml")]) == 0
    out = capsys.readouterr().out
    assert "192 positions = 7.68 s back, 4 positions = 0.16 s ahead" in out
    assert "lookahead latency 4 positions = 0.16 s" in out
    assert "300.00 KiB in float32" in out
    assert "parameters        3,559,296" in out
    assert "FLOPs / position" in out


def test_info_gives_the_seed_example_exactly(capsys):
    assert main(["info", "--config", str(CONFIGS / "encoder_seed_32x256.yaml")]) == 0
    assert "8192 positions back" in capsys.readouterr().out


def test_info_finds_an_encoder_nested_in_a_lightning_config(tmp_path, capsys):
    path = write(
        tmp_path,
        "model:\n  class_path: x.Task\n  init_args:\n    encoder:\n"
        "      d_model: 32\n      n_heads: 2\n      n_layers: 2\n      window: [[4, 1], [8, 0]]\n",
    )
    assert main(["info", "--config", str(path)]) == 0
    assert "12 positions back, 1 positions ahead" in capsys.readouterr().out


def test_info_adds_the_speech_frontend_and_the_algorithmic_latency(capsys):
    # 160 ms chunk + (25 - 10) ms of STFT window past the last hop + 2 lookahead frames of 40 ms
    assert main(["info", "--config", str(CONFIGS / "asr_demo.yaml")]) == 0
    out = capsys.readouterr().out
    assert "4x subsampling: 25 frames/s" in out
    assert "latency           255 ms at 160 ms chunks" in out
    assert main(["info", "--config", str(CONFIGS / "asr_demo.yaml"), "--chunk-ms", "320"]) == 0
    assert "latency           415 ms at 320 ms chunks" in capsys.readouterr().out


def test_info_adds_the_dna_stem_to_the_field(tmp_path, capsys):
    text = (CONFIGS / "dna_demo.yaml").read_text()
    assert main(["info", "--config", str(write(tmp_path, text))]) == 0  # the task's default stem, 9 wide
    assert "model field       68 positions = 68 bp back" in capsys.readouterr().out
    text = text.replace("  init_args:\n    encoder:", "  init_args:\n    stem_kernel: 15\n    encoder:")
    assert main(["info", "--config", str(write(tmp_path, text))]) == 0
    assert "model field       71 positions = 71 bp back" in capsys.readouterr().out


def test_info_reads_a_model_bundle(tmp_path, capsys):
    from swa_stream.bundle import save_bundle
    from swa_stream.config import SWAConfig
    from swa_stream.tasks.dna.model import DNAModel

    cfg = SWAConfig(d_model=16, n_heads=2, n_layers=2, window=(8, 8), frame_rate=1.0, frame_unit="bp")
    model = DNAModel(cfg, ["a", "b"], stem_kernel=5)
    save_bundle(tmp_path, model, "dna", {"encoder": cfg.to_dict(), "classes": ["a", "b"], "stem_kernel": 5})
    assert main(["info", "--model", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "16 positions = 16 bp back" in out and "18 positions = 18 bp back" in out
    assert main(["info", "--model", str(tmp_path / "missing")]) == 2
    assert "missing: no such model folder" in capsys.readouterr().err
    (tmp_path / "config.json").unlink()
    assert main(["info", "--model", str(tmp_path)]) == 2
    assert "config.json: missing" in capsys.readouterr().err


def test_info_says_what_a_model_learned_from_and_its_licence(tmp_path, capsys):
    from swa_stream.bundle import save_bundle
    from swa_stream.tasks.registry import schema

    dna = schema("dna")
    config = {"encoder": {"d_model": 16, "n_heads": 2, "n_layers": 1, "window": [4, 0]}, "classes": ["a", "b"]}
    model = dna.build(config)
    data = [{"name": "E. coli K-12 promoters", "source": "RegulonDB", "licence": "CC BY 4.0"}]
    save_bundle(tmp_path, model, "dna", {**dna.model_config(model), "training_data": data})
    assert main(["info", "--model", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training data     E. coli K-12 promoters; RegulonDB (licence: CC BY 4.0)" in out
    assert "trained on" not in out  # a bundle that does not say its records' length
    save_bundle(tmp_path, model, "dna", {**dna.model_config(model), "record_length": 81})
    assert main(["info", "--model", str(tmp_path)]) == 0
    assert "trained on        81 bp records; score-fasta --windows scans longer sequences" in capsys.readouterr().out


def test_info_plot_writes_a_png(tmp_path):
    out = tmp_path / "field.png"
    assert main(["info", "--config", str(CONFIGS / "encoder_dna.yaml"), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["info", "--config", str(CONFIGS / "encoder_dna.yaml"), "--plot", str(out)]) == 0  # replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field.png"]  # no temporary file left


def test_info_plot_never_overwrites_the_config_or_a_file_that_is_not_an_image(tmp_path, capsys):
    config = write(tmp_path, (CONFIGS / "encoder_dna.yaml").read_text())
    notes = write(tmp_path, "my notes\n", "notes.png")
    for target, message in ((config, "--plot names an input"), (notes, "exists and is not a plot image")):
        before = target.read_bytes()
        assert main(["info", "--config", str(config), "--plot", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"swa-stream: error: {target}: ") and message in err and target.read_bytes() == before


@pytest.mark.parametrize(
    "text, message",
    [
        ("d_model: 64\nn_heads: 4\nn_layers: 2\nwindow: [-3, 0]\n", "window: left and right must be >= 0"),
        ("d_model: 65\nn_heads: 4\nn_layers: 2\nwindow: [3, 0]\n", "d_model: 65 is not divisible"),
        ("d_model: 64\nn_heads: 4\nn_layers: 2\nwindow: []\n", "window: the per-layer list is empty"),
        ("trainer: {}\n", "no encoder section"),
        ("window: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_end_in_one_line_naming_the_file(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    assert main(["info", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"swa-stream: error: {path}: ") and message in err
    assert err.count("\n") == 1


def test_missing_file_is_named(capsys):
    assert main(["info", "--config", "no/such.yaml"]) == 2
    assert "no/such.yaml: no such file" in capsys.readouterr().err


def test_console_script_exits_2_without_traceback_and_debug_shows_it(tmp_path):
    path = write(tmp_path, "d_model: 64\nn_heads: 4\nn_layers: 2\nwindow: [-1, 0]\n")
    cmd = [sys.executable, "-m", "swa_stream.pipelines.cli"]
    plain = subprocess.run(cmd + ["info", "--config", str(path)], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run(cmd + ["--debug", "info", "--config", str(path)], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_demo_streams_every_config_and_finds_them_equal(capsys):
    assert main(["demo", "--configs", str(CONFIGS), "--length", "300"]) == 0
    out = capsys.readouterr().out
    assert out.count("max |streamed - offline|") == len(list(CONFIGS.glob("*.yaml")))
    assert "streaming vs offline over" in out and ": equal" in out


def test_a_reader_that_leaves_early_gets_no_traceback():
    exe = Path(sys.executable).with_name("swa-stream")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: every write raises BrokenPipeError
    done = subprocess.run([str(exe), "info", "--config", str(CONFIGS / "encoder_variants.yaml")], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert "Traceback" not in done.stderr and done.returncode == 141


@pytest.mark.parametrize("args", [["--help"], ["info", "--config", "configs/asr_demo.yaml"],
                                  ["info", "--config", "configs/dna_demo.yaml"]])
def test_help_and_info_of_a_config_start_without_torch(args):
    """torch and Lightning take seconds to import; what only reads a config must not pay for them."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "swa_stream.pipelines.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "lightning", "numpy"))
    assert "swa_stream.config" in imported and heavy == []


@pytest.mark.parametrize("chunk_ms", ["-1", "0", "inf", "nan"])
def test_info_refuses_a_chunk_that_is_not_a_positive_duration(chunk_ms, capsys):
    assert main(["info", "--config", str(CONFIGS / "asr_demo.yaml"), "--chunk-ms", chunk_ms]) == 2
    err = capsys.readouterr().err
    assert err.startswith("swa-stream: error: --chunk-ms: must be a positive number") and err.count("\n") == 1


def test_one_process_commands_end_with_os_exit_and_the_others_do_not(monkeypatch):
    from swa_stream.pipelines.cli import _fast_exit

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _fast_exit(["transcribe", "a.wav"]) and _fast_exit(["--debug", "score-fasta", "a.fa", "--out", "o.zarr"])
    assert not _fast_exit(["score-fasta", "a.fa", "--out", "o.zarr", "--devices", "2"])
    assert not any(_fast_exit(argv) for argv in (["fit", "--config", "c.yaml"], ["serve"], ["demo"], []))
    monkeypatch.setenv("WORLD_SIZE", "2")  # one of torchrun's processes
    assert not _fast_exit(["score-fasta", "a.fa", "--out", "o.zarr", "--num-nodes", "2"])


def test_the_console_script_flushes_everything_before_its_fast_exit(tmp_path):
    """Through a pipe, stdout is block-buffered: os._exit would drop what was not flushed. The transcript (many
    jsonl lines) and score-fasta's files must arrive whole, and the exit status must be kept."""
    exe = str(Path(sys.executable).with_name("swa-stream"))
    wav = REPO / "pipelines" / "examples" / "asr_demo.wav"
    done = subprocess.run([exe, "transcribe", str(wav), "--format", "jsonl"], capture_output=True, text=True,
                          timeout=300)
    finals = [line for line in done.stdout.splitlines() if '"type": "final"' in line]
    assert done.returncode == 0 and done.stdout.endswith("}\n")
    assert [json.loads(f)["text"] for f in finals] == ["four one five nine", "two zero six"]
    fasta = tmp_path / "a.fa"
    fasta.write_text(">a\n" + "ACGT" * 300 + "\n>b\n" + "GATTACA" * 100 + "\n")
    done = subprocess.run([exe, "score-fasta", str(fasta), "--out", str(tmp_path / "o.zarr"), "--tsv",
                           str(tmp_path / "o.tsv"), "--model", "dna-demo"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [row.split("\t")[2] for row in (tmp_path / "o.tsv").read_text().splitlines()[1:]] == ["a", "b"]
    missing = subprocess.run([exe, "transcribe", str(tmp_path / "none.wav")], capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and missing.stderr == f"swa-stream: error: {tmp_path / 'none.wav'}: no such file\n"


def test_a_file_named_like_a_training_command_is_not_taken_for_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["transcribe", "test"]) == 2  # a file called "test", which is missing: not LightningCLI's test
    assert capsys.readouterr().err == "swa-stream: error: test: no such file\n"


def test_the_fast_exit_flush_survives_closed_and_failing_streams(monkeypatch, capsys):
    from swa_stream.pipelines.cli import _fast_exit, _flushed

    class Full:
        def flush(self):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys, "stdout", None)  # started with stdout closed
    assert _flushed(0) == 0
    monkeypatch.setattr(sys, "stdout", Full())
    assert _flushed(0) == 1 and _flushed(2) == 2  # a failed write is an error; an earlier error code stays
    assert "swa-stream: error: stdout: cannot write (No space left on device)" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "")
    assert _fast_exit(["info", "--model", "asr-demo"])
    monkeypatch.setenv("WORLD_SIZE", "two")  # not ours to read: the usual exit
    assert not _fast_exit(["info", "--model", "asr-demo"])


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_full_disk_on_stdout_is_one_line_and_status_1():
    exe = str(Path(sys.executable).with_name("swa-stream"))
    with open("/dev/full", "w") as full:
        done = subprocess.run([exe, "info", "--config", str(CONFIGS / "asr_demo.yaml")], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "cannot write (No space left on device)" in done.stderr
