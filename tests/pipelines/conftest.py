"""Fixtures shared by the score-fasta and export-track tests."""

import pytest
import torch

from swa_stream import SWAConfig
from swa_stream.bundle import save_bundle
from swa_stream.tasks.dna.model import DNAModel


def save_tiny_dna_model(path, seed: int = 0) -> str:
    """A tiny random DNA bundle: scores carry no meaning, but every code path runs in milliseconds."""
    torch.manual_seed(seed)
    model = DNAModel(SWAConfig(d_model=16, n_heads=2, n_layers=2, window=(8, 8)), ["far", "near"])
    save_bundle(path, model, "dna", {"encoder": model.cfg.to_dict(), "classes": model.classes, "tracks": model.tracks})
    return str(path)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return save_tiny_dna_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def save_model():
    """save_tiny_dna_model(path, seed): for tests that replace a bundle's weights."""
    return save_tiny_dna_model
