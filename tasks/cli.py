"""The LightningCLI behind `swa-stream fit|validate|test|predict --config FILE.yaml`.

Every task's model and data are given by `class_path` in the YAML (subclass mode), so one CLI serves
speech and DNA. What the model must learn from the data flows through one link: the DataModule's
`labels` (class names, or a vocabulary) becomes the task's `labels` argument.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI


class SWACLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.labels", "model.init_args.labels", apply_on="instantiate")


def run(args: list[str]) -> None:
    SWACLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
    )
