"""`swa-stream info` and `swa-stream demo`, and how the CLI reports user errors."""

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


def test_info_plot_writes_a_png(tmp_path):
    out = tmp_path / "field.png"
    assert main(["info", "--config", str(CONFIGS / "encoder_dna.yaml"), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
