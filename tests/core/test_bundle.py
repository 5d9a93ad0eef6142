"""Bundles are config.json + model.safetensors, round-trip exactly, and fail with one clear line."""

import json

import pytest
import torch

from swa_stream import SWAConfig, SWAEncoder, SWAStreamError
from swa_stream.bundle import load_encoder, save_encoder


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return SWAEncoder(SWAConfig(d_model=16, n_heads=2, n_layers=2, window=[(4, 1), (6, 0)])).eval()


def test_round_trip_gives_identical_outputs(tmp_path, encoder):
    save_encoder(tmp_path / "enc", encoder)
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_encoder(tmp_path / "enc")
    assert loaded.cfg == encoder.cfg
    x = torch.randn(1, 20, 16)
    assert torch.equal(loaded(x), encoder(x))


def test_config_is_plain_json(tmp_path, encoder):
    save_encoder(tmp_path, encoder)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["kind"] == "encoder" and meta["config"]["window"] == [[4, 1], [6, 0]]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors: missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json: not valid JSON"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x80\x04pickle"), "model.safetensors: not a readable"),
        (
            lambda d: (d / "config.json").write_text(
                json.dumps({"format": "swa-stream-bundle", "kind": "encoder", "config": {"window": [-1, 0]}})
            ),
            "config.json: window",
        ),
    ],
)
def test_damaged_bundles_name_the_file(tmp_path, encoder, damage, message):
    save_encoder(tmp_path, encoder)
    damage(tmp_path)
    with pytest.raises(SWAStreamError, match=message):
        load_encoder(tmp_path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, encoder):
    save_encoder(tmp_path, encoder)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["n_layers"], meta["config"]["window"] = 3, [4, 1]
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(SWAStreamError, match="weights do not fit the config"):
        load_encoder(tmp_path)


def test_bundle_files_get_the_umask_permissions_like_any_file(tmp_path, encoder):
    """A bundle exported by one user is served by another: safetensors alone writes its file 0600."""
    import os

    old = os.umask(0o022)
    try:
        save_encoder(tmp_path / "enc", encoder)
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "enc" / name).stat().st_mode & 0o777 == 0o644, name
