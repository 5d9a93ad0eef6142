"""The DNA task trains through the LightningCLI (one process and 2-process DDP on CPU) and exports a
bundle that score-fasta uses."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swa_stream.config import SWAConfig
from swa_stream.pipelines.cli import main
from swa_stream.tasks.dna.data import DNADataModule

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]
TINY = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--model.init_args.encoder.n_layers", "2", "--model.init_args.encoder.d_model", "32",
        "--data.batch_size", "8"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dna_data")
    assert main(["demo-data", "dna", "--out", str(root), "--n-train", "32", "--n-val", "8", "--n-test", "8",
                 "--length", "1000"]) == 0
    return root


def test_demo_data_is_a_labelled_fasta_layout(data_root):
    dm = DNADataModule(str(data_root), batch_size=4)
    assert dm.labels == ["far", "near"] and dm.layout == "fasta"
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (4, 1000) and batch["track"].sum() > 0


def test_genomic_benchmarks_layout(tmp_path):
    for split in ("train", "test"):
        for label, seq in (("coding", "ACGTACGT"), ("intergenic", "TTTTGGGN")):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(5):
                (folder / f"{i}.txt").write_text(seq * (i + 1) + "\n")
    dm = DNADataModule(str(tmp_path), batch_size=3)
    dm.setup()
    assert dm.layout == "genomic_benchmarks" and dm.labels == ["coding", "intergenic"]
    assert len(dm._splits["val"]) == 1 and len(dm._splits["train"]) == 9 and len(dm._splits["test"]) == 10


def test_fit_test_export_and_score(data_root, tmp_path):
    run = tmp_path / "run"
    assert main(["fit", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root),
                 "--trainer.default_root_dir", str(run), *TINY]) == 0
    ckpt = next(run.glob("**/last.ckpt"))
    assert main(["test", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root),
                 "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(run), *TINY]) == 0
    assert main(["export", str(ckpt), "--out", str(tmp_path / "bundle")]) == 0
    assert main(["score-fasta", str(data_root / "test.fa"), "--out", str(tmp_path / "s.zarr"),
                 "--tsv", str(tmp_path / "s.tsv"), "--model", str(tmp_path / "bundle")]) == 0
    assert len((tmp_path / "s.tsv").read_text().splitlines()) == 1 + 8

    # a second phase starts from the exported weights: before any step, the task holds them exactly
    from safetensors.torch import load_file

    from swa_stream.tasks.dna.module import GenomicsTask

    bundle = tmp_path / "bundle"
    weights = load_file(str(bundle / "model.safetensors"))
    encoder = json.loads((bundle / "config.json").read_text())["config"]["encoder"]
    task = GenomicsTask(SWAConfig.from_dict(encoder), ["far", "near"], init_from=str(bundle))
    assert all(torch.equal(task.model.state_dict()[k], v) for k, v in weights.items())
    assert main(["fit", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root),
                 "--trainer.default_root_dir", str(run), "--model.init_args.init_from", str(bundle), *TINY]) == 0


def test_last_ckpt_is_the_last_epoch_even_when_the_metric_stops_improving(data_root, tmp_path):
    """With lr 0 the validation accuracy never changes, so the best checkpoint stays at epoch 0; last.ckpt,
    the one to resume from, must still hold the final epoch (save_last=True alone leaves it at the best)."""
    run = tmp_path / "run"
    at = TINY.index("--trainer.max_steps")
    args = TINY[:at] + TINY[at + 2 :]
    assert main(["fit", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root),
                 "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "3", "--model.init_args.lr", "0",
                 *args]) == 0
    folder = next(run.glob("**/checkpoints"))
    epochs = {p.name: torch.load(p, map_location="cpu", weights_only=False)["epoch"] for p in folder.glob("*.ckpt")}
    assert epochs.pop("last.ckpt") == 2
    assert list(epochs.values()) == [0]  # the best by val/acc


def test_init_from_a_bundle_of_another_shape_is_one_line(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root),
                 "--trainer.default_root_dir", str(run), *TINY]) == 0
    assert main(["export", str(next(run.glob("**/last.ckpt"))), "--out", str(tmp_path / "bundle")]) == 0
    code = main(["fit", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root),
                 "--trainer.default_root_dir", str(run), "--model.init_args.init_from", str(tmp_path / "bundle"),
                 *TINY, "--model.init_args.encoder.d_model", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "(init_from): weights do not fit the config" in err and "Traceback" not in err


def test_two_process_ddp_fit_on_cpu(data_root, tmp_path):
    result = subprocess.run(
        CLI + ["fit", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root),
               "--trainer.default_root_dir", str(tmp_path), "--trainer.devices", "2", "--trainer.strategy", "ddp",
               "--trainer.accelerator", "cpu", *TINY],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max_steps=2" in result.stderr + result.stdout


def test_missing_checkpoint_is_one_line(data_root, tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    for flag in (["--ckpt_path", str(missing)], [f"--ckpt_path={missing}"]):
        code = main(["test", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root), *flag])
        err = capsys.readouterr().err
        assert code == 2 and "nope.ckpt: no such checkpoint file" in err and "Traceback" not in err


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    code = main(["fit", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(tmp_path / "nope")])
    assert code == 2 and "nope: no such data folder" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--model.init_args.lr", ".inf", "lr: must be a finite number, got inf"),
    ("--model.init_args.lr", "-0.001", "lr: must be >= 0"),
    ("--model.init_args.weight_decay", "-1", "weight_decay: must be >= 0"),
    ("--model.init_args.track_weight", ".nan", "track_weight: must be a finite number"),
    ("--data.init_args.batch_size", "0", "batch_size: must be >= 1"),
    ("--data.init_args.val_fraction", "1.0", "val_fraction: must be below 1"),
    ("--data.init_args.max_length", "0", "max_length: must be >= 1"),
])
def test_bad_training_numbers_are_one_line_naming_the_field(data_root, tmp_path, capsys, flag, value, message):
    code = main(["fit", "--config", str(REPO / "configs/dna_demo.yaml"), "--data.root", str(data_root),
                 "--trainer.default_root_dir", str(tmp_path), *TINY, flag, value])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err[-2000:]
