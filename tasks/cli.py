"""The LightningCLI behind `swa-stream fit|validate|test|predict --config FILE.yaml`.

Every task's model and data are given by `class_path` in the YAML (subclass mode), so one CLI serves
speech and DNA. What the model must learn from the data flows through one link: the DataModule's
`labels` (class names, or a vocabulary) becomes the task's `labels` argument.

A user's mistake ends in one line on stderr, and nothing before it: `--ckpt_path` is checked (safely: no
pickled code runs) before Lightning builds anything, and Lightning's info lines ("GPU available: ...") are
held back until the data and model have been set up, then shown; after an error they are dropped.
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI

from swa_stream.errors import ConfigError, SWAStreamError
from swa_stream.tasks.registry import load_checkpoint

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def _checked_labels(data) -> list[str]:
    """The data's labels for the task, refusing one class only: a classifier of one class learns nothing,
    and the task would fail later with a message that does not name the data."""
    labels = list(data.labels)
    if len(labels) == 1:
        where = getattr(data, "root", None) or "data"
        raise SWAStreamError(f"{where}: the labels name one class only ({labels[0]!r}); a classifier needs two or "
                             "more (track-only data has no labels file, and a .bed track instead)")
    return labels


class _ReleaseInfoLines(L.Callback):
    """Shows Lightning's held-back info lines once setup has succeeded (the data loaded, the model built)."""

    def __init__(self, hold: _HoldInfoLines):
        self.hold = hold

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.hold.let_through()


class SWACLI(LightningCLI):
    hold: _HoldInfoLines | None = None  # set by run() around one CLI invocation

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data", "model.init_args.labels", compute_fn=_checked_labels, apply_on="instantiate")

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if SWACLI.hold is not None:
            trainer.callbacks.append(_ReleaseInfoLines(SWACLI.hold))
        return trainer


class _HoldInfoLines(logging.Handler):
    """Holds what Lightning's loggers say (see the module doc): `let_through` replays it where it would have gone
    (their own handlers, or the root's) and lets later records through; leaving after an error drops it."""

    def __enter__(self) -> _HoldInfoLines:
        self.records: list[logging.LogRecord] = []
        self.saved = {name: (logging.getLogger(name).handlers, logging.getLogger(name).propagate)
                      for name in LIGHTNING_LOGGERS}
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = [self], False
        self.released = False
        return self

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def let_through(self) -> None:
        if self.released:
            return
        self.released = True
        for name, (handlers, propagate) in self.saved.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
        for record in self.records:
            logging.getLogger(record.name).handle(record)
        self.records = []

    def __exit__(self, kind, err, tb) -> None:
        if kind is not None:
            self.records = []
        self.let_through()


def _user_error(err: BaseException) -> SWAStreamError | None:
    """jsonargparse wraps errors raised while building the model and data; find ours in the chain. A file the
    data module could not open is the user's too: it becomes `<file>: <reason>`."""
    while err is not None:
        if isinstance(err, SWAStreamError):
            return err
        if isinstance(err, OSError) and err.filename:
            return SWAStreamError(f"{err.filename}: {(err.strerror or str(err)).lower()}")
        err = err.__cause__ or err.__context__
    return None


def _config_name(args: list[str]) -> str:
    return next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"), "command line")


def _check_ckpt_path(args: list[str]) -> None:
    """A missing, damaged or unsafe --ckpt_path is the user's mistake: one line, before Lightning starts."""
    for i, a in enumerate(args):
        value = args[i + 1] if a == "--ckpt_path" and i + 1 < len(args) else a.partition("=")[2]
        if (a == "--ckpt_path" or a.startswith("--ckpt_path=")) and value not in ("best", "last", "hpc", "registry"):
            try:
                load_checkpoint(value)
            except SWAStreamError as err:
                raise SWAStreamError(f"{err} (--ckpt_path)") from None


def run(args: list[str]) -> None:
    _check_ckpt_path(args)
    # Our console script hands LightningCLI its own argv explicitly; its "args and sys.argv" warning is noise.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    with _HoldInfoLines() as hold:
        SWACLI.hold = hold
        try:
            _run_cli(args)
        finally:
            SWACLI.hold = None


def _run_cli(args: list[str]) -> None:
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
    except (ArgumentError, ValueError, OSError) as err:
        ours = _user_error(err)
        if ours is None and not isinstance(err, ArgumentError):
            raise
        if ours is not None and not isinstance(ours, ConfigError):
            raise ours from None
        message = " ".join(str(ours or err).split())  # one line, whatever jsonargparse wrapped
        if len(message) > 400:
            message = message[:400] + " ..."
        raise SWAStreamError(f"{_config_name(args)}: {message}") from None
