"""Rotary positions that stay exact at any absolute position.

Plain RoPE rotates by `p * theta` in floating point, which loses precision as p grows: at p = 1e9 a
float32 angle is off by whole radians. We make every rotary frequency an integer harmonic of one
period P = 2**24 positions:

    theta_k = 2*pi * n_k / P        with integer n_k ~ P * base**(-2k/D) / (2*pi)

so the angle of position p is `2*pi * ((n_k * (p mod P)) mod P) / P`, computed in integer arithmetic
and exactly periodic in P. The score between a query at i and a key at j then depends only on
i - j (mod P), and windows are validated to be shorter than P, so a stream can run forever and a
stream started at 10**9 sees exactly the geometry of one started at 0.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from swa_stream.config import ROPE_PERIOD


def rope_harmonics(head_dim: int, base: float) -> torch.Tensor:
    """Integer harmonics n_k (head_dim // 2,) approximating the usual RoPE frequencies."""
    k = torch.arange(head_dim // 2, dtype=torch.float64)
    inv_freq = base ** (-2.0 * k / head_dim)
    return torch.clamp(torch.round(inv_freq * ROPE_PERIOD / (2 * math.pi)), min=1).to(torch.int64)


# Tables of recent runs, shared by every layer with the same head size and base: in a streaming step the
# layers ask for the same few runs of positions, and a table costs more small ops than a lookup.
_TABLES: OrderedDict = OrderedDict()
_TABLES_KEPT = 64
_RUN = 256
_CONTIGUOUS_ROTATION = 1 << 15  # elements from which `rotate_full` copies its input contiguous first


class RotaryPositions(nn.Module):
    """Computes rotation tables for a run of consecutive positions and applies them."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("harmonics", rope_harmonics(head_dim, base), persistent=False)
        self.key = (head_dim, float(base))

    def tables(self, start, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions start .. start + length - 1: (length, head_dim // 2) for one start, or
        (B, 1, length, head_dim // 2) for a list of per-row starts (a ragged batch: broadcast over heads)."""
        if not isinstance(start, int):
            cos, sin = self._tables(list(start), length, dtype)
            return cos[:, None], sin[:, None]
        if length > _RUN:
            cos, sin = self._tables([start], length, dtype)
            return cos[0], sin[0]
        return self._cut(start, length, dtype, 0)

    def full_tables(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The tables as `rotate_full` takes them, (length, head_dim) each: [cos, cos] and [-sin, sin]."""
        if length > _RUN:
            return self.full(*self.tables(start, length, dtype))
        return self._cut(start, length, dtype, 2)

    def _cut(self, start: int, length: int, dtype: torch.dtype, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A short run (length <= _RUN) cut from the cached table of 2 * _RUN positions that starts at the
        multiple of _RUN below `start`, so a stream's steps and layers share one table for many steps:
        tables `first` and `first + 1` of `_run_table` ((cos, sin) or the full pair)."""
        offset = start % _RUN
        found = self._run_table(start - offset, dtype)
        return found[first][offset : offset + length], found[first + 1][offset : offset + length]

    def _run_table(self, base: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """(cos, sin, [cos, cos], [-sin, sin]) of the 2 * _RUN positions from base (a multiple of _RUN)."""
        harmonics = self.harmonics
        key = (*self.key, harmonics.device, dtype, base % ROPE_PERIOD, torch.is_inference_mode_enabled())
        found = _TABLES.get(key)
        if found is None:
            cos, sin = self._tables([base], 2 * _RUN, dtype)
            found = _TABLES[key] = (cos[0], sin[0], *self.full(cos[0], sin[0]))
            if len(_TABLES) > _TABLES_KEPT:
                _TABLES.popitem(last=False)
        return found

    @staticmethod
    def full(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)

    @staticmethod
    def rotate_full(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
        """`rotate` with the full tables: x * [cos, cos] + [x2, x1] * [-sin, sin], the same numbers in four
        ops instead of seven (a - b and a + (-b) round alike).

        x is usually a strided view of the qkv projection. On a long run, elementwise ops on that view, and
        `roll`, walk it 16 floats at a time (a 2 x 16,384 x 4-head run took 46 ms on one CPU thread), so it
        is copied contiguous once and the halves are swapped by two slice copies: the same products and
        sums, bit for bit, in 18 ms, and the result is contiguous, as the attention kernels want it."""
        if x.numel() < _CONTIGUOUS_ROTATION:
            return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin
        x, half = x.contiguous(), x.shape[-1] // 2
        swapped = torch.empty_like(x)
        swapped[..., :half], swapped[..., half:] = x[..., half:], x[..., :half]
        out = x * cos
        out += swapped.mul_(signed_sin)
        return out

    def _tables(self, starts: list[int], length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.harmonics.device
        # Reduce the (possibly huge) Python ints first; everything after stays below 2**48.
        first = torch.tensor([s % ROPE_PERIOD for s in starts], device=device, dtype=torch.int64)
        p = (first[:, None] + torch.arange(length, device=device, dtype=torch.int64)) % ROPE_PERIOD
        phase = (p[..., None] * self.harmonics) % ROPE_PERIOD  # < 2**24: exact in float32
        angle = phase.to(torch.float32) * (2 * math.pi / ROPE_PERIOD)
        return angle.cos().to(dtype), angle.sin().to(dtype)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate x (..., T, D) by the tables (T, D/2), pairing dimension i with i + D/2."""
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
