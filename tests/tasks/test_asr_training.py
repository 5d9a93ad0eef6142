"""The ASR task trains through the LightningCLI on both configs (on tiny generated data), resumes from a
checkpoint, fixes its feature statistics at the start of fit, exports a bundle, and that bundle transcribes."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from swa_stream.bundle import load_bundle
from swa_stream.pipelines.cli import main
from swa_stream.tasks.asr.synthetic import DIGITS

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = ["--model.init_args.encoder.d_model", "32", "--model.init_args.encoder.n_heads", "2",
              "--model.init_args.encoder.n_layers", "2", "--model.init_args.encoder.window", "[[4, 0], [4, 1]]",
              "--model.init_args.encoder.d_ff", "64", "--model.init_args.frontend.d_model", "32",
              "--model.init_args.frontend.conv_channels", "8", "--model.init_args.norm_utterances", "6"]
TINY_RUN = ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--data.batch_size", "4"]


def tone_utterance(rng: np.random.Generator, words: list[str]) -> np.ndarray:
    """A stand-in for speech: one 0.2 s tone per word over noise (the pipeline, not accuracy, is under test)."""
    parts = [0.01 * rng.standard_normal(1600)]
    for w in words:
        t = np.arange(3200) / 16000
        parts += [0.3 * np.sin(2 * np.pi * (200 + 60 * DIGITS.index(w)) * t), 0.01 * rng.standard_normal(800)]
    return np.concatenate(parts).astype(np.float32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr_data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        (root / "wav" / split).mkdir(parents=True)
        with open(root / f"{split}.jsonl", "w") as manifest:
            for i in range(n):
                words = list(rng.choice(DIGITS, rng.integers(1, 4)))
                audio = tone_utterance(rng, words)
                sf.write(root / "wav" / split / f"{i}.wav", audio, 16000)
                manifest.write(json.dumps({"audio_filepath": f"wav/{split}/{i}.wav", "duration": len(audio) / 16000,
                                           "text": " ".join(words)}) + "\n")
    return root


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("asr_run")
    assert main(["fit", "--config", str(REPO / "configs/asr_demo.yaml"), "--data.root", str(data_root),
                 "--trainer.default_root_dir", str(run), "--trainer.max_steps", "2", *TINY_MODEL, *TINY_RUN]) == 0
    return run, next(run.glob("**/last.ckpt"))


def test_fit_stores_feature_statistics_in_the_checkpoint(trained):
    _, ckpt = trained
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    mean, std = state["model.frontend.norm.mean"], state["model.frontend.norm.std"]
    assert mean.shape == (80,) and not torch.all(mean == 0) and not torch.all(std == 1)


def test_resume_test_export_and_transcribe(trained, data_root, tmp_path, capsys):
    run, ckpt = trained
    config = ["--config", str(REPO / "configs/asr_demo.yaml"), "--data.root", str(data_root),
              "--trainer.default_root_dir", str(run), *TINY_MODEL, *TINY_RUN]
    assert main(["fit", *config, "--trainer.max_steps", "3", "--ckpt_path", str(ckpt)]) == 0
    assert main(["test", *config, "--ckpt_path", str(ckpt)]) == 0
    assert main(["export", str(ckpt), "--out", str(tmp_path / "bundle")]) == 0
    config_json, weights = load_bundle(tmp_path / "bundle", kind="asr")
    assert config_json["labels"][:2] == ["<blank>", " "] and "frontend.norm.mean" in weights
    capsys.readouterr()
    wav = data_root / "wav" / "test" / "0.wav"
    assert main(["transcribe", str(wav), "--model", str(tmp_path / "bundle"), "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(line["type"] in ("partial", "final") for line in lines)  # an untrained model may say nothing


def test_librispeech_recipe_trains_on_a_tiny_layout(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train-clean-100", "dev-clean"):
        folder = tmp_path / "LibriSpeech" / split / "84" / "121123"
        folder.mkdir(parents=True)
        lines = []
        for i in range(4):
            uid = f"84-121123-{i:04d}"
            sf.write(folder / f"{uid}.flac", tone_utterance(rng, ["one", "two"][: 1 + i % 2]), 16000, format="FLAC")
            lines.append(f"{uid} {'ONE TWO' if i % 2 else 'ONE'}")
        (folder / "84-121123.trans.txt").write_text("\n".join(lines) + "\n")
    code = main(["fit", "--config", str(REPO / "configs/asr_librispeech.yaml"),
                 "--data.root", str(tmp_path / "LibriSpeech"), "--data.train", "train-clean-100",
                 "--data.test", "dev-clean", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
                 "--trainer.devices", "1", "--trainer.precision", "32-true", "--trainer.max_steps", "2",
                 "--trainer.default_root_dir", str(tmp_path / "run"), *TINY_MODEL, *TINY_RUN])
    assert code == 0 and next((tmp_path / "run").glob("**/last.ckpt"))


def test_missing_manifest_is_one_line(data_root, tmp_path, capsys):
    code = main(["fit", "--config", str(REPO / "configs/asr_demo.yaml"), "--data.root", str(data_root),
                 "--data.train", "nope.jsonl", "--trainer.default_root_dir", str(tmp_path), *TINY_MODEL, *TINY_RUN])
    assert code == 2 and "nope.jsonl: no such manifest" in capsys.readouterr().err


def test_fit_reads_a_folder_of_digit_clips_in_fsdd_layout(data_root, tmp_path):
    rng = np.random.default_rng(2)
    clips = tmp_path / "recordings"
    clips.mkdir()
    for i in range(8):
        digit = i % 3
        sf.write(clips / f"{digit}_alice_{i}.wav", tone_utterance(rng, [DIGITS[digit]]), 8000)
    assert main(["fit", "--config", str(REPO / "configs/asr_real.yaml"), "--data.root", str(data_root),
                 "--data.train", str(clips), "--data.val", "val.jsonl", "--model.init_args.init_from", "null",
                 "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "2",
                 *TINY_MODEL, *TINY_RUN]) == 0
    assert next((tmp_path / "run").glob("**/last.ckpt"))


def test_init_from_a_bundle_without_the_garbage_label_keeps_its_transcripts(tmp_path):
    from swa_stream.bundle import save_bundle
    from swa_stream.config import SWAConfig
    from swa_stream.tasks.asr.frontend import FrontendConfig
    from swa_stream.tasks.asr.model import ASRModel
    from swa_stream.tasks.asr.module import ASRTask
    from swa_stream.tasks.asr.text import GARBAGE, VOCABULARY

    encoder = SWAConfig(d_model=32, n_heads=2, n_layers=2, window=[(4, 0), (4, 1)], d_ff=64)
    old = ASRModel(FrontendConfig(d_model=32, conv_channels=8), encoder, VOCABULARY[:-1]).eval()
    save_bundle(tmp_path / "old", old, "asr", old.config())
    task = ASRTask(encoder, FrontendConfig(d_model=32, conv_channels=8), VOCABULARY, init_from=str(tmp_path / "old"))
    new = task.model.eval()
    assert new.labels[-1] == GARBAGE and new.head.weight.shape[0] == len(old.labels) + 1
    audio = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        lp_old, _ = old(audio)
        lp_new, _ = new(audio)
    assert torch.equal(lp_new.argmax(-1), lp_old.argmax(-1))
    assert lp_new[..., -1].exp().max() < 0.05  # the new label starts silent


def test_init_from_a_shallower_bundle_grows_it_with_identity_layers(tmp_path):
    from swa_stream.bundle import save_bundle
    from swa_stream.config import SWAConfig
    from swa_stream.errors import SWAStreamError
    from swa_stream.tasks.asr.frontend import FrontendConfig
    from swa_stream.tasks.asr.model import ASRModel
    from swa_stream.tasks.asr.module import ASRTask
    from swa_stream.tasks.asr.text import VOCABULARY

    frontend = FrontendConfig(d_model=32, conv_channels=8)
    shallow = SWAConfig(d_model=32, n_heads=2, n_layers=2, window=[(4, 0), (4, 1)], d_ff=64)
    old = ASRModel(frontend, shallow, VOCABULARY).eval()
    save_bundle(tmp_path / "old", old, "asr", old.config())
    deep = SWAConfig(d_model=32, n_heads=2, n_layers=4, window=[(4, 0), (4, 1), (8, 0), (8, 0)], d_ff=64)
    new = ASRTask(deep, frontend, VOCABULARY, init_from=str(tmp_path / "old")).model.eval()
    audio, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000])
    with torch.no_grad():
        lp_old, n_old = old(audio, lengths)
        lp_new, n_new = new(audio, lengths)
    assert torch.equal(n_new, n_old) and torch.allclose(lp_new, lp_old, atol=1e-6)  # the same function at first
    new_block = new.encoder.blocks[3]
    assert new_block.attn.qkv.weight.abs().sum() > 0 and new_block.ffn[0].weight.abs().sum() > 0  # trainable
    for other in (SWAConfig(d_model=32, n_heads=2, n_layers=3, window=[(8, 0), (4, 1), (8, 0)], d_ff=64),
                  SWAConfig(d_model=32, n_heads=4, n_layers=3, window=[(4, 0), (4, 1), (8, 0)], d_ff=64),
                  SWAConfig(d_model=32, n_heads=2, n_layers=3, window=[(4, 0), (4, 1), (8, 0)], d_ff=64,
                            rope_base=500.0),
                  SWAConfig(d_model=32, n_heads=2, n_layers=3, window=[(4, 0), (4, 1), (8, 0)], d_ff=64,
                            downsample=[1, 1, 2])):  # other windows, heads, rotary base; a pooled new layer
        with pytest.raises(SWAStreamError, match="a deeper model must be the same encoder for its first 2 layers"):
            ASRTask(other, frontend, VOCABULARY, init_from=str(tmp_path / "old"))


def test_init_from_a_bundle_with_other_labels_is_one_line(tmp_path):
    from swa_stream.bundle import save_bundle
    from swa_stream.config import SWAConfig
    from swa_stream.errors import SWAStreamError
    from swa_stream.tasks.asr.frontend import FrontendConfig
    from swa_stream.tasks.asr.model import ASRModel
    from swa_stream.tasks.asr.module import ASRTask
    from swa_stream.tasks.asr.text import VOCABULARY

    encoder = SWAConfig(d_model=32, n_heads=2, n_layers=2, window=[(4, 0), (4, 1)], d_ff=64)
    other = ASRModel(FrontendConfig(d_model=32, conv_channels=8), encoder, ["<blank>", " ", "x", "y"])
    save_bundle(tmp_path / "other", other, "asr", other.config())
    with pytest.raises(SWAStreamError, match="init_from has other labels"):
        ASRTask(encoder, FrontendConfig(d_model=32, conv_channels=8), VOCABULARY, init_from=str(tmp_path / "other"))
