"""GenomicsTask: training logic for DNAModel (sequence classes plus an optional per-position track).

Per-position metrics (accuracy, AUROC, F1 of the track against the data's BED truth) are logged as
`val/track_*` and `test/track_*` wherever the data has a track. A track-only task (the data module links
`labels == []`) has no class head loss and no class metrics."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassMatthewsCorrCoef,
)

from swa_stream.config import SWAConfig, in_range
from swa_stream.errors import SWAStreamError
from swa_stream.lengths import length_mask
from swa_stream.tasks.dna.model import DEFAULT_STEM_KERNEL, DEFAULT_TRACK, DNAModel
from swa_stream.tasks.optim import adamw_warmup_cosine, check_training_numbers


class GenomicsTask(L.LightningModule):
    """Cross-entropy on the record's class, plus `track_weight` x binary cross-entropy on the
    per-position track where the data provides one. `labels` (class names) is linked from the data;
    `stem_kernel` is the width of the convolutional stem in front of the encoder (0: none). `init_from`, a
    model bundle (e.g. one made by `swa-stream export`), starts training from its weights: fine-tuning, or
    the second phase of a curriculum. Its architecture and classes must match this task's, except that a
    plain model may start a variant (the variant's own parameters keep their initial values).
    `training_data` (a list of {name, licence, source}) says what the model learned from; `export` copies
    it into the bundle. `track_name` names the per-position track in the bundle, the store and the TSV
    (bacteria-genes: "coding"). `record_length`, for a classifier trained on records of one length (81 bp
    windows for ecoli-promoters), goes into the bundle too: `score-fasta --windows` scans by it.
    `absolute_positions` (with `record_length`) adds a learned vector per position of the record to the
    base embeddings, for aligned windows whose signal sits at a fixed place (tasks/dna/model.py)."""

    def __init__(
        self,
        encoder: SWAConfig,
        labels: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        track_weight: float = 0.2,
        stem_kernel: int = DEFAULT_STEM_KERNEL,
        init_from: str | None = None,
        training_data: list[dict] | None = None,
        track_name: str = DEFAULT_TRACK,
        record_length: int | None = None,
        absolute_positions: bool = False,
    ):
        super().__init__()
        if labels is None:
            raise ValueError("labels: the class names are required (the CLI links them from data.labels)")
        check_training_numbers(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        in_range("track_weight", track_weight, 0.0)
        in_range("stem_kernel", stem_kernel, 0, integer=True)
        if not isinstance(track_name, str) or not track_name.strip() or "\t" in track_name:
            raise ValueError(f"track_name: a non-empty name without tabs, got {track_name!r}")
        self.save_hyperparameters()
        in_range("record_length", record_length, 1, integer=True, none_ok=True)
        self.model = DNAModel(encoder, labels, tracks=[track_name], stem_kernel=stem_kernel,
                              record_length=record_length, absolute_positions=absolute_positions)
        if init_from:
            self._load_initial_weights(init_from)
        n = len(labels)

        def metrics(prefix: str) -> MetricCollection:
            if not n:
                return MetricCollection({}, prefix=prefix)
            return MetricCollection(
                {
                    "acc": MulticlassAccuracy(num_classes=n, average="micro"),
                    "auroc": MulticlassAUROC(num_classes=n),
                    "mcc": MulticlassMatthewsCorrCoef(num_classes=n),
                },
                prefix=prefix,
            )

        def track_metrics(prefix: str) -> MetricCollection:
            # Binned AUROC: a validation pass scores millions of positions, and exact AUROC would keep them all.
            scores = {"track_acc": BinaryAccuracy(), "track_auroc": BinaryAUROC(thresholds=1000),
                      "track_f1": BinaryF1Score()}
            return MetricCollection(scores, prefix=prefix)

        self.val_metrics, self.test_metrics = metrics("val/"), metrics("test/")
        self.val_track, self.test_track = track_metrics("val/"), track_metrics("test/")

    def _load_initial_weights(self, directory: str) -> None:
        from swa_stream.attention import VARIANT_PARAMETERS
        from swa_stream.bundle import load_bundle, load_weights

        config, weights = load_bundle(directory, kind="dna")
        if config.get("classes") != self.model.classes:
            raise SWAStreamError(
                f"{directory}: init_from has classes {config.get('classes')}, the data has {self.model.classes}"
            )
        load_weights(self.model, weights, f"{directory} (init_from)", may_lack=VARIANT_PARAMETERS)

    def _losses(self, batch: dict):
        """(loss, class logits, track probabilities and truth at the positions that have truth)."""
        class_logits, track_logits = self.model(batch["tokens"], batch["lengths"])
        loss = track_logits.new_zeros(())
        if self.model.classes:
            loss = F.cross_entropy(class_logits, batch["labels"])
        valid = length_mask(batch["lengths"], batch["tokens"].shape[1])
        valid = valid & batch["has_track"][:, None] & (batch["tokens"] < 4)  # N has no truth to learn
        scored = None
        if valid.any():
            logits, truth = track_logits[..., 0][valid], batch["track"][valid]
            loss = loss + self.hparams.track_weight * F.binary_cross_entropy_with_logits(logits, truth)
            scored = (torch.sigmoid(logits.detach()), truth.long())
        return loss + self.model.encoder.auxiliary_loss(), class_logits, scored

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._losses(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _evaluate(self, batch: dict, metrics: MetricCollection, track: MetricCollection, prefix: str) -> None:
        loss, logits, scored = self._losses(batch)
        size = len(batch["labels"])
        self.log(f"{prefix}loss", loss, sync_dist=True, batch_size=size)
        if self.model.classes:
            metrics.update(logits.softmax(-1), batch["labels"])
            self.log_dict(metrics, prog_bar=True, batch_size=size)
        if scored is not None:
            track.update(*scored)
            self.log_dict(track, prog_bar=not self.model.classes, batch_size=size)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_track, "val/")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_track, "test/")

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.hparams.lr, self.hparams.weight_decay, self.hparams.warmup_steps)
