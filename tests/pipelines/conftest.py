"""Fixtures shared by the pipeline tests: tiny DNA bundles, and real tmpfs mounts for disk faults."""

import subprocess

import pytest
import torch

from swa_stream import SWAConfig
from swa_stream.bundle import save_bundle
from swa_stream.tasks.dna.model import DNAModel


def save_tiny_dna_model(path, seed: int = 0, classes=("far", "near"), tracks=None) -> str:
    """A tiny random DNA bundle: scores carry no meaning, but every code path runs in milliseconds."""
    torch.manual_seed(seed)
    model = DNAModel(SWAConfig(d_model=16, n_heads=2, n_layers=2, window=(8, 8)), list(classes), tracks)
    save_bundle(path, model, "dna", {"encoder": model.cfg.to_dict(), "classes": model.classes, "tracks": model.tracks})
    return str(path)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return save_tiny_dna_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def track_model_dir(tmp_path_factory):
    """A tiny track-only bundle (no classes, one track named "coding"), shaped like bacteria-genes."""
    return save_tiny_dna_model(tmp_path_factory.mktemp("track_model"), classes=(), tracks=["coding"])


@pytest.fixture(scope="session")
def save_model():
    """save_tiny_dna_model(path, seed): for tests that replace a bundle's weights."""
    return save_tiny_dna_model


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(options) -> a fresh folder with a real tmpfs mounted on it with `options` (e.g. "size=64k,ro",
    "size=1m"), unmounted afterwards; skips where the machine does not let us mount (not root, or no
    CAP_SYS_ADMIN)."""
    made = []

    def mount(options: str):
        where = tmp_path / f"tmpfs{len(made)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        made.append(where)
        return where

    yield mount
    for where in made:
        subprocess.run(["umount", str(where)], capture_output=True)
