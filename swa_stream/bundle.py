"""Model bundles: a folder with `config.json` and `model.safetensors`.

Weights never go through pickle, so a bundle from anyone is safe to load. `config.json` records what
kind of model the bundle holds and the config needed to rebuild it.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

from swa_stream.config import SWAConfig
from swa_stream.encoder import SWAEncoder
from swa_stream.errors import ConfigError, SWAStreamError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "swa-stream-bundle"
VERSION = 1


def _umask() -> int:
    """The process's umask (read by setting and restoring it: os has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_bundle(directory: str | Path, module: nn.Module, kind: str, config: dict) -> Path:
    """Write `module`'s weights and `{kind, config}` into `directory` (created if needed). Each file is written
    to a temporary name beside it, synced, then renamed, weights first: a crash or a full disk leaves the
    old bundle or a whole new one, never a half-written file. OSError reaches the caller (it names the path)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "kind": kind, "config": config}
    weights, text = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    tmp_weights, tmp_text = (p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in (weights, text))
    try:
        try:
            save_model(module, str(tmp_weights), metadata={"kind": kind})
        except SafetensorError as err:  # it wraps the OS's error (a full disk) in its own type
            code = re.search(r"os error (\d+)", str(err))
            raise OSError(int(code[1]) if code else errno.EIO, os.strerror(int(code[1])) if code else str(err),
                          str(weights)) from None
        os.chmod(tmp_weights, 0o666 & ~_umask())  # safetensors creates its file 0600; a bundle is shared
        tmp_text.write_text(json.dumps(meta, indent=2) + "\n")
        for tmp in (tmp_weights, tmp_text):
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_weights, weights)
        os.replace(tmp_text, text)
    finally:
        for tmp in (tmp_weights, tmp_text):
            tmp.unlink(missing_ok=True)
    return directory


def load_bundle(directory: str | Path, kind: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a bundle: (its config, its weights). Raises SWAStreamError naming the file on any problem."""
    directory = Path(directory)
    weights_path = directory / WEIGHTS_FILE
    _, config = load_bundle_config(directory, kind)
    if not weights_path.is_file():
        raise SWAStreamError(f"{weights_path}: missing (a model bundle holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        weights = load_file(str(weights_path))
    except PermissionError:
        raise SWAStreamError(f"{weights_path}: cannot read: permission denied") from None
    except (SafetensorError, OSError) as err:
        raise SWAStreamError(f"{weights_path}: not a readable safetensors file ({err})") from None
    return config, weights


def load_bundle_config(directory: str | Path, kind: str | None = None) -> tuple[str, dict]:
    """A bundle's (kind, config) without its weights."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "not a folder" if directory.exists() else "no such model folder"
        raise SWAStreamError(f"{directory}: {what} (a model bundle is a folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise SWAStreamError(f"{config_path}: missing (a model bundle holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(config_path.read_text())
    except OSError as err:
        raise SWAStreamError(f"{config_path}: cannot read: {(err.strerror or str(err)).lower()}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SWAStreamError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise SWAStreamError(f"{config_path}: not a swa-stream bundle config")
    if kind is not None and meta.get("kind") != kind:
        raise SWAStreamError(f"{config_path}: holds a model of kind {meta.get('kind')!r}, not {kind!r}")
    return meta.get("kind"), meta["config"]


def load_weights(
    module: nn.Module, weights: dict[str, torch.Tensor], source: str | Path, may_lack: tuple[str, ...] = ()
) -> nn.Module:
    """Load weights strictly, turning a mismatch into one clear line. Parameters named in `may_lack` (the
    last part of their name) may be absent and keep their initial values: starting a variant (e.g. global
    tokens) from a plain model's weights."""
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        shape = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), "size mismatch")
        raise SWAStreamError(f"{source}: weights do not fit the config ({shape})") from None
    missing = [name for name in missing if name.rsplit(".", 1)[-1] not in may_lack]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise SWAStreamError(f"{source}: weights do not fit the config ({detail})")
    return module


def save_encoder(directory: str | Path, encoder: SWAEncoder) -> Path:
    return save_bundle(directory, encoder, "encoder", encoder.cfg.to_dict())


def load_encoder(directory: str | Path) -> SWAEncoder:
    config, weights = load_bundle(directory, kind="encoder")
    try:
        cfg = SWAConfig.from_dict(config)
    except (ConfigError, TypeError) as err:
        raise SWAStreamError(f"{Path(directory) / CONFIG_FILE}: {err}") from None
    return load_weights(SWAEncoder(cfg), weights, Path(directory) / WEIGHTS_FILE).eval()
