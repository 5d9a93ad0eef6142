"""The optimiser every task trains with: AdamW, linear warm-up, then cosine decay to 5% of the peak."""

from __future__ import annotations

import math

import lightning as L
import torch

from swa_stream.config import in_range


def check_training_numbers(lr, weight_decay, warmup_steps) -> None:
    """The optimiser's fields, checked when the task is built (not at the first step, minutes later): a NaN
    learning rate would train to NaN without a word."""
    in_range("lr", lr, 0.0)  # 0 freezes the weights (a test of checkpointing, say)
    in_range("weight_decay", weight_decay, 0.0)
    in_range("warmup_steps", warmup_steps, 0, integer=True)


def adamw_warmup_cosine(task: L.LightningModule, lr: float, weight_decay: float, warmup_steps: int) -> dict:
    """What `configure_optimizers` returns; the schedule steps per batch over the whole fit."""
    optimizer = torch.optim.AdamW(task.parameters(), lr=lr, weight_decay=weight_decay)
    total = max(1, task.trainer.estimated_stepping_batches)
    warmup = min(warmup_steps, total // 2)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(progress * math.pi))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
