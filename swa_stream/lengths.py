"""Valid positions of a padded batch: one definition for every module that takes `lengths`."""

from __future__ import annotations

import torch


def length_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(B, length) bool: True where position t < lengths[b]."""
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]


def zero_past(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) with every row at or past lengths[b] set to zero."""
    valid = length_mask(lengths.to(x.device), x.shape[1])
    return x * valid.view(*valid.shape, *([1] * (x.dim() - 2))).to(x.dtype)
