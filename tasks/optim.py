"""The optimiser every task trains with: AdamW, linear warm-up, then cosine decay to 5% of the peak."""

from __future__ import annotations

import math

import lightning as L
import torch


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
