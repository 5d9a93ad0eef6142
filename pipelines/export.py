"""`swa-stream export CKPT --out DIR`: a training checkpoint -> a bundle (config.json + model.safetensors).

The checkpoint is loaded with `weights_only=True`, which refuses arbitrary pickled objects; only the
config dataclasses that our tasks save as hyperparameters are allowed through. What the bundle holds, and
the task's defaults, come from the task's schema (tasks/registry.py).

The output is checked before the checkpoint is read (an existing file, a read-only place, the checkpoint
itself inside the bundle), and each file is written through a temporary name and a rename.
"""

from __future__ import annotations

from pathlib import Path

from swa_stream.bundle import CONFIG_FILE, WEIGHTS_FILE, save_bundle
from swa_stream.errors import ConfigError, SWAStreamError
from swa_stream.pipelines.safe_output import os_problem, probe_folder
from swa_stream.tasks.registry import for_hparams, load_checkpoint


def _check_out(out: str, checkpoint: Path) -> Path:
    """Refuse an output that is not a folder we may write, or that would replace the checkpoint itself."""
    if not out:
        raise SWAStreamError("--out: an empty path; give a folder for the bundle")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SWAStreamError(f"{folder}: exists and is not a folder; --out names the bundle folder to write")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        target = folder / name
        if target.exists() and checkpoint.exists() and target.samefile(checkpoint):
            raise SWAStreamError(f"{target}: is the checkpoint being exported; refusing to overwrite it")
    existing = folder  # probe where the folder will be made, but make it only once the checkpoint loaded
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SWAStreamError(f"{folder}: cannot write: {existing} is not a folder")
    probe_folder(existing, folder)
    return folder


def run(checkpoint: str, out: str) -> None:
    path = Path(checkpoint)
    folder = _check_out(out, path)
    ckpt = load_checkpoint(path)
    hparams = ckpt.get("hyper_parameters") or {}
    task = for_hparams(hparams)
    if task is None:
        name = str(hparams.get("_class_path", "")).rsplit(".", 1)[-1]
        raise SWAStreamError(f"{path}: cannot export a {name or 'checkpoint of an unknown task'}")
    try:
        model = task.build(task.from_task_args(hparams))
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise SWAStreamError(f"{path}: hyperparameters: {err}") from None
    weights = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SWAStreamError(f"{path}: weights do not match the task ({(missing or unexpected)[:3]})")
    try:
        config = task.model_config(model)
        if hparams.get("training_data"):  # the config's word on what the model learned from, and its licences
            config["training_data"] = hparams["training_data"]
        save_bundle(folder, model, task.kind, config)
    except OSError as err:
        raise os_problem(folder, err) from None
    size = sum(p.numel() for p in model.parameters())
    print(f"exported {task.kind} model ({size:,} parameters) to {folder / CONFIG_FILE} and {folder / WEIGHTS_FILE}")
