"""The LightningCLI behind `swa-stream fit|validate|test|predict --config FILE.yaml`.

Every task's model and data are given by `class_path` in the YAML (subclass mode), so one CLI serves
speech and DNA. What the model must learn from the data flows through one link: the DataModule's
`labels` (class names, or a vocabulary) becomes the task's `labels` argument.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI

from swa_stream.errors import ConfigError, SWAStreamError


class SWACLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.labels", "model.init_args.labels", apply_on="instantiate")


def _user_error(err: BaseException) -> SWAStreamError | None:
    """jsonargparse wraps errors raised while building the model and data; find ours in the chain."""
    while err is not None:
        if isinstance(err, SWAStreamError):
            return err
        err = err.__cause__ or err.__context__
    return None


def _config_name(args: list[str]) -> str:
    return next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"), "command line")


def _check_ckpt_path(args: list[str]) -> None:
    """A missing --ckpt_path file is the user's mistake: one line, before Lightning builds anything."""
    for i, a in enumerate(args):
        value = args[i + 1] if a == "--ckpt_path" and i + 1 < len(args) else a.partition("=")[2]
        if (a == "--ckpt_path" or a.startswith("--ckpt_path=")) and value not in ("best", "last", "hpc", "registry"):
            if not Path(value).is_file():
                raise SWAStreamError(f"{value}: no such checkpoint file (--ckpt_path)")


def run(args: list[str]) -> None:
    _check_ckpt_path(args)
    # Our console script hands LightningCLI its own argv explicitly; its "args and sys.argv" warning is noise.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        SWACLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
        )
    except (ArgumentError, ValueError) as err:
        ours = _user_error(err)
        if ours is None and not isinstance(err, ArgumentError):
            raise
        if ours is not None and not isinstance(ours, ConfigError):
            raise ours from None
        message = " ".join(str(ours or err).split())  # one line, whatever jsonargparse wrapped
        if len(message) > 400:
            message = message[:400] + " ..."
        raise SWAStreamError(f"{_config_name(args)}: {message}") from None
