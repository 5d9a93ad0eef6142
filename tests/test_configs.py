"""Every YAML in configs/ builds what it says (torchtune's test_configs.py).

Each file is one of three kinds, told apart by its content, so a new config is picked up with no edit here:
  * an encoder config (SWAConfig fields at the top level, for `swa-stream info`): the encoder is built and
    streams exactly;
  * a LightningCLI config (a `model` with a `class_path`): instantiated with `LightningCLI(args=...,
    run=False)`, then fit for one batch (`fast_dev_run`) on CPU on tiny data of the layout it reads;
  * an overlay (a `model` without a `class_path`, for `--config BASE --config OVERLAY`): its header names
    its base (`An overlay on configs/X.yaml`), and the pair is run like a LightningCLI config.
The data is generated, never downloaded: the sources a speech config names (manifests, LibriSpeech
folders) are written with tones standing in for words, and DNA configs read `swa-stream demo-data dna`'s
layout (classes and a per-position track). An `init_from` bundle is made from the config's own model.
Only what a 2-core CPU cannot do is overridden: accelerator, devices, precision, workers, output folder.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from swa_stream import SWAConfig, SWAEncoder
from swa_stream.bundle import save_bundle
from swa_stream.errors import ConfigError
from swa_stream.pipelines.cli import main
from swa_stream.tasks.cli import SWACLI
from swa_stream.tasks.registry import for_task

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml"))
OVERLAY_BASE = re.compile(r"overlay on (configs/[\w./-]+\.yaml)")
CPU_RUN = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
           "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false", "--data.num_workers", "0"]


@pytest.fixture(autouse=True)
def one_thread():
    """One batch of tiny data gains nothing from a second thread, and where other jobs share the 2 cores an
    OpenMP team waits for its descheduled member: measured under load, one fit took 25 s on 2 threads, 2 s on 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read(config: str) -> dict:
    return yaml.safe_load((REPO / config).read_text())


def kind(config: str) -> str:
    data = read(config)
    if "model" not in data:
        return "encoder"
    return "cli" if "class_path" in data["model"] else "overlay"


def base_of(overlay: str) -> str:
    found = OVERLAY_BASE.search((REPO / overlay).read_text())
    assert found, f"{overlay}: an overlay's header must name its base ('An overlay on configs/X.yaml')"
    return found.group(1)


def merged(*configs: str) -> dict:
    """What LightningCLI reads from `--config A --config B`: later mappings update earlier ones, key by key."""
    def update(into: dict, new: dict) -> dict:
        for key, value in new.items():
            into[key] = update(into.get(key, {}), value) if isinstance(value, dict) else value
        return into

    out: dict = {}
    for config in configs:
        update(out, copy.deepcopy(read(config)))
    return out


RUNS = [[c] for c in CONFIGS if kind(c) == "cli"] + [[base_of(c), c] for c in CONFIGS if kind(c) == "overlay"]


def test_every_yaml_is_one_of_the_three_kinds_and_every_overlay_has_a_base():
    assert CONFIGS and all(kind(c) in ("encoder", "cli", "overlay") for c in CONFIGS)
    for overlay in (c for c in CONFIGS if kind(c) == "overlay"):
        assert kind(base_of(overlay)) == "cli", f"{overlay}: its base {base_of(overlay)} is not a LightningCLI config"
    assert len(RUNS) + sum(kind(c) == "encoder" for c in CONFIGS) == len(CONFIGS)


# ---- encoder configs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [c for c in CONFIGS if kind(c) == "encoder"])
@torch.no_grad()
def test_an_encoder_config_builds_an_encoder_that_streams_exactly(config):
    cfg = SWAConfig.from_dict(read(config))
    enc = SWAEncoder(cfg).eval()
    x = torch.randn(1, 45, cfg.d_model, generator=torch.Generator().manual_seed(0))
    offline = enc(x)
    state, outs = enc.init_state(batch_size=1), []
    for chunk in x.split([1, 7, 16, 21], dim=1):
        out, state = enc.step(chunk, state)
        outs.append(out)
    streamed = torch.cat([*outs, enc.flush(state)], dim=1)
    assert offline.shape == x.shape and torch.isfinite(offline).all()
    torch.testing.assert_close(streamed, offline, rtol=1e-4, atol=1e-5)


# ---- tiny data, one folder per layout -------------------------------------------------------------------
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def tones(rng: np.random.Generator, words: list[str]) -> np.ndarray:
    """0.15 s of a tone per word over faint noise: the pipeline is under test, not what a model learns."""
    t = np.arange(2400) / 16000
    parts = [0.01 * rng.standard_normal(800)]
    for w in words:
        parts += [0.3 * np.sin(2 * np.pi * (220 + 50 * WORDS.index(w)) * t), 0.01 * rng.standard_normal(400)]
    return np.concatenate(parts).astype(np.float32)


def write_speech_source(root: Path, source: str, rng: np.random.Generator, n: int = 4) -> None:
    """`source` as the data module reads it: a manifest if it names a .json/.jsonl file, else a LibriSpeech
    folder (one speaker, one chapter)."""
    utterances = [list(rng.choice(WORDS, rng.integers(1, 3))) for _ in range(n)]
    if source.endswith((".json", ".jsonl")):
        audio_dir = root / "wav" / Path(source).stem
        audio_dir.mkdir(parents=True, exist_ok=True)
        with open(root / source, "w") as manifest:
            for i, words in enumerate(utterances):
                audio = tones(rng, words)
                sf.write(audio_dir / f"{i}.wav", audio, 16000)
                manifest.write(json.dumps({"audio_filepath": str((audio_dir / f"{i}.wav").relative_to(root)),
                                           "duration": len(audio) / 16000, "text": " ".join(words)}) + "\n")
        return
    chapter = root / source / "84" / "121123"
    chapter.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, words in enumerate(utterances):
        sf.write(chapter / f"84-121123-{i:04d}.flac", tones(rng, words), 16000, format="FLAC")
        lines.append(f"84-121123-{i:04d} {' '.join(words).upper()}")
    (chapter / "84-121123.trans.txt").write_text("\n".join(lines) + "\n")


def speech_data(root: Path, data_args: dict) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        sources = data_args.get(split) or []
        for source in [sources] if isinstance(sources, str) else sources:
            if not (root / source).exists():
                write_speech_source(root, source, rng)
    return root


@pytest.fixture(scope="module")
def dna_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dna")
    assert main(["demo-data", "dna", "--out", str(root), "--n-train", "8", "--n-val", "4", "--n-test", "4",
                 "--length", "400", "--edge-margin", "0"]) == 0
    return root


def data_for(config: dict, tmp_path: Path, dna_data: Path) -> Path | None:
    """A tiny data root for the config's data module; None for a module with no generator here yet."""
    data = config["data"]
    name = data["class_path"].rsplit(".", 1)[-1]
    if name == "ASRDataModule":
        return speech_data(tmp_path / "speech", data.get("init_args", {}))
    if name == "DNADataModule":
        return dna_data
    return None


# ---- LightningCLI configs and overlays ------------------------------------------------------------------
def instantiate(args: list[str]) -> SWACLI:
    return SWACLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                  args=args, run=False, save_config_callback=None, parser_kwargs={"exit_on_error": False})


def bundle_of_own_model(args: list[str], class_path: str, out: Path) -> Path:
    """An `init_from` bundle with the config's own shape (the one it names is a training run's output)."""
    cli = instantiate([*args, "--model.init_args.init_from", "null"])
    schema = for_task(class_path)
    save_bundle(out, cli.model.model, schema.kind, schema.model_config(cli.model.model))
    return out


@pytest.mark.parametrize("configs", RUNS, ids=lambda c: " + ".join(Path(p).stem for p in c))
def test_a_training_config_instantiates_and_fits_one_batch_on_cpu(configs, tmp_path, dna_data):
    config = merged(*configs)
    root = data_for(config, tmp_path, dna_data)
    args = [a for c in configs for a in ("--config", str(REPO / c))]
    args += ["--trainer.default_root_dir", str(tmp_path / "run"), *CPU_RUN]
    args += [] if root is None else ["--data.root", str(root)]
    model_args = config["model"].get("init_args", {})
    if model_args.get("init_from"):
        bundle = bundle_of_own_model(args, config["model"]["class_path"], tmp_path / "init_from")
        args += ["--model.init_args.init_from", str(bundle)]
    cli = instantiate(args)
    schema = for_task(config["model"]["class_path"])
    built = SWAConfig.from_dict(schema.model_config(cli.model.model)["encoder"])
    assert built == SWAConfig.from_dict(model_args["encoder"])  # the overlay's fields reached the model
    if root is not None:  # else instantiating is all that can be checked (data_for says how to add more)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        assert cli.trainer.state.finished and cli.trainer.global_step == 1


# ---- other config dataclasses ---------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["win_ms", "hop_ms"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "25"])
def test_the_speech_frontend_refuses_nan_inf_and_strings_naming_the_field(field, value):
    from swa_stream.tasks.asr.schema import FrontendConfig

    with pytest.raises(ConfigError, match=rf"^{field}: must be a positive number of milliseconds"):
        FrontendConfig(**{field: value})


@pytest.mark.parametrize("line, message", [
    ('dropout: "0.1"', "dropout: must be a number, got '0.1'"),
    ("norm_eps: .nan", "norm_eps: must be a finite number, got nan"),
    ("frame_rate: .inf", "frame_rate: must be a finite number, got inf"),
    ("downsample: [1, 2]", "downsample: 2 per-layer values given but n_layers is 3"),
])
def test_info_on_a_config_with_a_bad_field_is_one_line_naming_it(tmp_path, capsys, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"d_model: 32\nn_heads: 2\nn_layers: 3\nwindow: [4, 0]\n{line}\n")
    assert main(["info", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"swa-stream: error: {path}: {message}\n"
