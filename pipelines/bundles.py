"""Model bundles by task: the models shipped in the package (any folder of pipelines/models/), finding one
by name or folder, and loading it through its task's schema (tasks/registry.py).

`--model` takes a bundle folder, or the name of a bundled model (`dna-demo`, or any other folder shipped
under pipelines/models/); without it, a task uses its schema's default model.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from swa_stream.bundle import CONFIG_FILE, WEIGHTS_FILE, load_bundle, load_weights
from swa_stream.errors import ConfigError, SWAStreamError
from swa_stream.tasks.registry import schema


def _shipped() -> Path:
    return Path(str(resources.files("swa_stream.pipelines").joinpath("models")))


def bundled_models() -> list[str]:
    """The names of the models shipped in the package."""
    root = _shipped()
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file()) if root.is_dir() else []


def default_model_dir(kind: str) -> Path:
    """The shipped default model of a task kind ("dna", "asr")."""
    return _shipped() / schema(kind).default_model


def model_dir(model: str | Path | None, kind: str) -> Path:
    """The folder `--model` names: a path, else a bundled model's name; None is the task's default model."""
    if model is None or str(model) == "":
        return default_model_dir(kind)
    path = Path(model)
    if path.exists() or path.is_absolute() or len(path.parts) != 1 or str(model) not in bundled_models():
        return path
    return _shipped() / str(model)


def load_model(model: str | Path | None, kind: str):
    """The plain model (eval mode) of a bundle of `kind`: errors name the file and the field."""
    directory = model_dir(model, kind)
    if model is None and not (directory / CONFIG_FILE).is_file():
        raise SWAStreamError(f"no default {kind} model ({directory.name}) is bundled in this install: pass --model "
                             "DIR (a bundle made by swa-stream export)")
    if not directory.exists() and str(model) == Path(str(model)).name:
        shipped = ", ".join(bundled_models()) or "none"
        raise SWAStreamError(f"{model}: no such model folder, and no bundled model of that name (bundled: {shipped})")
    config, weights = load_bundle(directory, kind=kind)
    try:
        module = schema(kind).build(config)
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise SWAStreamError(f"{directory / CONFIG_FILE}: {err}") from None
    return load_weights(module, weights, directory / WEIGHTS_FILE).eval()


def load_dna_model(directory: str | Path | None = None):
    return load_model(directory, "dna")


def load_asr_model(directory: str | Path | None = None):
    """An ASR bundle (`swa-stream export` of an ASRTask checkpoint), or the bundled asr-demo."""
    return load_model(directory, "asr")
