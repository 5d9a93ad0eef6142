"""The demo models shipped inside the package, and loading any model bundle by task."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from swa_stream.bundle import load_bundle, load_weights
from swa_stream.config import SWAConfig
from swa_stream.errors import ConfigError, SWAStreamError

DEFAULT_MODELS = {"dna": "dna-demo", "asr": "asr-demo"}


def default_model_dir(kind: str) -> Path:
    return Path(str(resources.files("swa_stream.pipelines").joinpath("models", DEFAULT_MODELS[kind])))


def load_dna_model(directory: str | Path | None = None):
    from swa_stream.tasks.dna.model import DNAModel

    directory = Path(directory) if directory else default_model_dir("dna")
    config, weights = load_bundle(directory, kind="dna")
    try:
        model = DNAModel(SWAConfig.from_dict(config["encoder"]), config["classes"], config.get("tracks"),
                         stem_kernel=config.get("stem_kernel", 0))
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise SWAStreamError(f"{directory / 'config.json'}: {err}") from None
    return load_weights(model, weights, directory / "model.safetensors").eval()


def load_asr_model(directory: str | Path | None = None):
    """An ASR bundle (`swa-stream export` of an ASRTask checkpoint), or the bundled asr-demo."""
    from swa_stream.tasks.asr.model import ASRModel

    if directory is None:
        directory = default_model_dir("asr")
        if not (directory / "config.json").is_file():
            raise SWAStreamError(
                "no default ASR model is bundled yet: pass --model DIR (a bundle made by swa-stream export)"
            )
    directory = Path(directory)
    config, weights = load_bundle(directory, kind="asr")
    try:
        model = ASRModel.from_config(config)
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise SWAStreamError(f"{directory / 'config.json'}: {err}") from None
    return load_weights(model, weights, directory / "model.safetensors").eval()
