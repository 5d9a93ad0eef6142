"""`swa-stream export CKPT --out DIR`: a training checkpoint -> a bundle (config.json + model.safetensors).

The checkpoint is loaded with `weights_only=True`, which refuses arbitrary pickled objects; only the
config dataclasses that our tasks save as hyperparameters are allowed through.
"""

from __future__ import annotations

from pathlib import Path

import torch

from swa_stream.bundle import save_bundle
from swa_stream.config import SWAConfig
from swa_stream.errors import SWAStreamError


def _dna(hparams: dict, weights: dict):
    from swa_stream.tasks.dna.model import DNAModel

    encoder = hparams["encoder"]  # a dict when LightningCLI built the task, else the dataclass
    encoder = SWAConfig.from_dict(encoder) if isinstance(encoder, dict) else encoder
    stem_kernel = hparams.get("stem_kernel", 0)
    model = DNAModel(encoder, hparams["labels"], stem_kernel=stem_kernel)
    config = {"encoder": encoder.to_dict(), "classes": model.classes, "tracks": model.tracks,
              "stem_kernel": stem_kernel}
    return model, "dna", config


def _asr(hparams: dict, weights: dict):
    from swa_stream.tasks.asr.frontend import FrontendConfig
    from swa_stream.tasks.asr.model import ASRModel

    encoder = hparams["encoder"]  # dicts when LightningCLI built the task, else the dataclasses
    encoder = SWAConfig.from_dict(encoder) if isinstance(encoder, dict) else encoder
    frontend = hparams.get("frontend") or {"d_model": encoder.d_model}
    frontend = FrontendConfig(**frontend) if isinstance(frontend, dict) else frontend
    model = ASRModel(frontend, encoder, hparams["labels"], hparams.get("end_silence_ms", 100.0))
    return model, "asr", model.config()


# task class -> builder of (plain model, bundle kind, bundle config); other tasks add theirs here
EXPORTERS = {"GenomicsTask": _dna, "ASRTask": _asr}


def _safe_classes() -> list:
    """Config dataclasses that a checkpoint's hyperparameters may hold (when a task was built in Python)."""
    from swa_stream.tasks.asr.frontend import FrontendConfig

    return [SWAConfig, FrontendConfig]


def _load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise SWAStreamError(f"{path}: no such checkpoint")
    try:
        with torch.serialization.safe_globals(_safe_classes()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for damaged, foreign or unsafe files
        raise SWAStreamError(f"{path}: not a training checkpoint that swa-stream can load safely") from None


def run(checkpoint: str, out: str) -> None:
    path = Path(checkpoint)
    ckpt = _load_checkpoint(path)
    hparams = ckpt.get("hyper_parameters", {})
    guess = "ASRTask" if "end_silence_ms" in hparams else "GenomicsTask" if "labels" in hparams else ""
    task = str(hparams.get("_class_path", guess)).rsplit(".", 1)[-1]
    if task not in EXPORTERS:
        raise SWAStreamError(f"{path}: cannot export a {task or 'unknown'} checkpoint")
    model, kind, config = EXPORTERS[task](hparams, ckpt["state_dict"])
    weights = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SWAStreamError(f"{path}: weights do not match the task ({(missing or unexpected)[:3]})")
    save_bundle(out, model, kind, config)
    size = sum(p.numel() for p in model.parameters())
    print(f"exported {kind} model ({size:,} parameters) to {out}/config.json and {out}/model.safetensors")
