"""The tasks a model bundle can hold, by bundle `kind`, each with its schema in one module.

A task's schema (tasks/<task>/schema.py) owns everything that pipelines need to know about its bundles:
the config a bundle's config.json holds, how a training checkpoint or a training config becomes one (with
the task's defaults), how to build the plain model, and the lines `swa-stream info` adds. Pipelines look a
schema up here and never re-derive a task's defaults or math.

Importing this module, or a schema, does not import torch: `swa-stream info --config` must start fast.
Schemas import their models only inside `build`.
"""

from __future__ import annotations

import math
from importlib import import_module
from pathlib import Path

from swa_stream.config import SWAConfig
from swa_stream.errors import ConfigError, SWAStreamError

_REQUIRED = object()
# bundle kind -> the module whose SCHEMA describes it; a new task adds one line here
_SCHEMAS = {"asr": "swa_stream.tasks.asr.schema", "dna": "swa_stream.tasks.dna.schema"}


class TaskSchema:
    """The interface each task's schema implements; see the module docstring."""

    kind: str  # the bundle's "kind" in config.json
    task_class: str  # the LightningModule's class name, as training configs and checkpoints name it
    default_model: str  # the bundled model (a folder of pipelines/models/) used when --model is not given
    hparam_marker: str  # a hyperparameter only this task has: it identifies checkpoints without a class path

    def safe_classes(self) -> list:
        """Config dataclasses a checkpoint's hyperparameters may hold (a task built in Python, not the CLI)."""
        return [SWAConfig]

    def from_task_args(self, args: dict) -> dict:
        """A bundle config from the task's constructor arguments (a checkpoint's hyperparameters, or a training
        config's `model.init_args`), with the task's defaults where an argument is absent."""
        raise NotImplementedError

    def build(self, config: dict):
        """The plain model (an nn.Module, untrained) that a bundle config describes. Imports torch."""
        raise NotImplementedError

    def model_config(self, model) -> dict:
        """What a bundle's config.json holds to rebuild `model`."""
        raise NotImplementedError

    def encoder(self, config: dict) -> SWAConfig:
        return field(config, "encoder", SWAConfig.from_dict, dict, nested=True)

    def describe(self, config: dict, chunk_ms: float) -> list[str]:
        """What the task's model adds around its encoder, as `info` lines (config from `from_task_args`, or a
        bundle's; labels may be absent)."""
        return []


def schema(kind) -> TaskSchema:
    """The schema of bundle `kind`; an unknown kind raises SWAStreamError (callers prefix the file)."""
    if not isinstance(kind, str) or kind not in _SCHEMAS:
        raise SWAStreamError(f"holds a {kind!r} model; this swa-stream knows {', '.join(sorted(_SCHEMAS))}")
    return import_module(_SCHEMAS[kind]).SCHEMA


def schemas() -> list[TaskSchema]:
    return [schema(kind) for kind in _SCHEMAS]


def for_task(class_path: str) -> TaskSchema | None:
    """The schema of a training config's or checkpoint's task class (`...module.GenomicsTask` or its name)."""
    name = str(class_path).rsplit(".", 1)[-1]
    return next((s for s in schemas() if s.task_class == name), None)


def for_hparams(hparams: dict) -> TaskSchema | None:
    """The schema of a checkpoint's hyperparameters: by the class path LightningCLI records, else by the one
    argument only that task takes."""
    if "_class_path" in hparams:
        return for_task(hparams["_class_path"])
    return next((s for s in schemas() if s.hparam_marker in hparams), None)


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint loaded safely (no code in it runs), or one SWAStreamError line naming the file.
    Used by `export` and to check `fit/test --ckpt_path` before Lightning starts."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise SWAStreamError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise SWAStreamError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as err:
        raise SWAStreamError(f"{path}: cannot read: {(err.strerror or str(err)).lower()}") from None
    if empty:
        raise SWAStreamError(f"{path}: empty file, not a checkpoint")
    classes = [c for s in schemas() for c in s.safe_classes()]
    try:
        with torch.serialization.safe_globals(classes):
            try:  # mapped, tensors stay on disk until used; only torch's zip format can be mapped
                ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged, foreign or unsafe files
        # torch's own text advises weights_only=False, i.e. running the file's code: never pass that on
        text = str(err).lower()
        unsafe = "unsupported global" in text or "global" in text and "blocked" in text
        why = "it holds Python objects that would have to run to load it" if unsafe else "damaged or not a checkpoint"
        raise SWAStreamError(f"{path}: refused: not a training checkpoint that swa-stream can load safely ({why})") \
            from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise SWAStreamError(f"{path}: not a Lightning training checkpoint (no state_dict)")
    return ckpt


# ---- helpers the schemas share ------------------------------------------------------------------------
def field(config: dict, name: str, parse=None, kind: type | tuple[type, ...] = object, default=_REQUIRED,
          nested: bool = False):
    """config[name], checked to be of `kind` and passed through `parse`, with errors that name the field:
    `labels: expected a list, got 5`, or for a section (`nested`) the field inside: `encoder.dropout: ...`."""
    if not isinstance(config, dict):
        raise ConfigError(f"config: expected a mapping, got {type(config).__name__}")
    value = config.get(name)
    if value is None:
        if default is _REQUIRED:
            raise ConfigError(f"{name}: missing")
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise ConfigError(f"{name}: expected {_kind_name(kind)}, got {value!r}")
    try:
        return value if parse is None else parse(value)
    except ConfigError as err:
        raise ConfigError(f"{name}.{err}" if nested else f"{name}: {str(err).removeprefix(name + ': ')}") from None
    except (TypeError, ValueError) as err:  # a value of the right type that the parser still refuses
        raise ConfigError(f"{name}: {str(err).removeprefix(name + ': ')}") from None


def string_list(value) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"expected a list of strings, got {value!r}")
    return list(value)


def finite(value) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}")
    return float(value)


def span_text(positions: int, cfg: SWAConfig) -> str:
    """'12 positions', or with the config's frame rate '12 positions = 0.48 s' / '= 12 bp'."""
    if cfg.frame_rate is None:
        return f"{positions} positions"
    amount = positions / cfg.frame_rate
    value = f"{amount:.3g}" if cfg.frame_unit == "s" else f"{amount:,.0f}"
    return f"{positions} positions = {value} {cfg.frame_unit}"


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
             bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))
