"""Ragged batches: each row of a batch is its own stream, with its own count of valid positions.

A ragged sequence is a tensor (B, T, ...) whose row b holds `counts[b]` valid positions, left-aligned, and
padding after them (any values: nothing downstream reads them). The per-row bookkeeping is kept in Python
integers (one host sync per step), so the common case, where every row holds the same count, takes plain
slices and concatenations, and only rows that really differ pay for a gather.

`select_rows` and `cat_rows` take rows out of, or join, any state built from dataclasses, lists and tensors
whose first dimension is the batch: how a server admits a stream to, or removes one from, a running batch.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from swa_stream.errors import SWAStreamError


def uniform(values: list[int]) -> bool:
    return all(v == values[0] for v in values)


def as_counts(counts, batch: int, width: int, what: str = "counts") -> list[int]:
    """Per-row counts as Python ints, checked: None means every row holds all `width` positions."""
    if counts is None:
        return [width] * batch
    values = counts.tolist() if isinstance(counts, torch.Tensor) else list(counts)
    if len(values) != batch or not all(isinstance(v, int) and 0 <= v <= width for v in values):
        raise SWAStreamError(f"{what}: expected {batch} integers in 0 .. {width} (one per row); got {values}")
    return values


def _index(offsets: list[int], length: int, limit: int, device) -> torch.Tensor:
    """(B, length): offsets[b] + j, clamped into the tensor (rows past the end are padding anyway)."""
    base = torch.tensor(offsets, device=device)[:, None] + torch.arange(length, device=device)[None]
    return base.clamp(0, max(limit - 1, 0))


def _gather(x: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """x gathered along `dim` by a (B, n) index, broadcast over every other dimension."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = index.shape
    full = list(x.shape)
    full[dim] = index.shape[1]
    return x.gather(dim, index.view(shape).expand(full))


def take(x: torch.Tensor, offsets: list[int], length: int, dim: int = 1) -> torch.Tensor:
    """Positions offsets[b] .. offsets[b] + length - 1 of each row b along `dim` (past the end: padding)."""
    if length == 0 or x.shape[dim] == 0:
        return x.narrow(dim, 0, 0) if length == 0 else x.new_zeros(*x.shape[:dim], length, *x.shape[dim + 1 :])
    if uniform(offsets) and 0 <= offsets[0] < x.shape[dim]:  # one slice, zero-padded if it runs past the end
        have = min(length, x.shape[dim] - offsets[0])
        part = x.narrow(dim, offsets[0], have)
        return part if have == length else F.pad(part, (0, 0) * (x.dim() - 1 - dim) + (0, length - have))
    return _gather(x, _index(offsets, length, x.shape[dim], x.device), dim)


def ragged_cat(a: torch.Tensor, counts: list[int], b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Row by row, the first counts[r] positions of `a` followed by all of `b`, left-aligned along `dim`."""
    if uniform(counts):
        return torch.cat([a.narrow(dim, 0, counts[0]), b], dim=dim)
    width = max(counts) + b.shape[dim]
    both = torch.cat([a, b], dim=dim)
    j = torch.arange(width, device=a.device)[None]
    n = torch.tensor(counts, device=a.device)[:, None]
    index = torch.where(j < n, j, a.shape[dim] + j - n).clamp(max=both.shape[dim] - 1)
    return _gather(both, index, dim)


def valid_mask(counts: list[int], width: int, device) -> torch.Tensor:
    """(B, width) bool: True at the valid positions of each row."""
    return torch.arange(width, device=device)[None] < torch.tensor(counts, device=device)[:, None]


class Rows:
    """One layer's per-row bookkeeping for a step, in Python ints: the stream's start, the positions the
    layer received before (n), and how many new ones each row brings (counts)."""

    def __init__(self, starts: list[int], n: list[int], counts: list[int], width: int):
        self.starts, self.n, self.counts = starts, n, counts
        self.ends = [s + m for s, m in zip(starts, n, strict=True)]
        aligned = uniform(self.ends) and uniform(n) and all(c == width for c in counts)
        self.new_counts = None if aligned else counts  # None: every row at one position, all rows valid

    def finishing(self) -> Rows:
        return Rows(self.starts, self.n, [0] * len(self.n), 0)

    def advanced(self) -> Rows:
        return Rows(self.starts, [m + c for m, c in zip(self.n, self.counts, strict=True)], self.counts, -1)


# ---- rows of a state ---------------------------------------------------------------------------
def select_rows(state, rows: torch.Tensor):
    """The same state restricted to batch rows `rows` (a LongTensor of row indices), recursively."""
    if state is None or isinstance(state, (int, float, str, bool)):
        return state
    if isinstance(state, torch.Tensor):
        return state.index_select(0, rows.to(state.device))
    if isinstance(state, (list, tuple)):
        return type(state)(select_rows(s, rows) for s in state)
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(state, **{f.name: select_rows(getattr(state, f.name), rows)
                                             for f in dataclasses.fields(state) if f.init})
    raise TypeError(f"select_rows: cannot take rows of {type(state).__name__}")


def cat_rows(states: list, where: str = "state", pad: tuple[str, ...] = ()):
    """One state holding the rows of every state in `states`, in order. Tensors must agree in every
    dimension but the batch, except those named in `pad` (ragged buffers: padded at the end of dim 1)."""
    first = states[0]
    if first is None:
        if any(s is not None for s in states):
            raise SWAStreamError(f"{where}: some states have it and some do not (different configs?)")
        return None
    if isinstance(first, (int, float, str, bool)):
        if any(s != first for s in states):
            raise SWAStreamError(f"{where}: states disagree ({[s for s in states]})")
        return first
    if isinstance(first, torch.Tensor):
        name = where.rsplit(".", 1)[-1]
        if name in pad:
            width = max(s.shape[1] for s in states)
            states = [F.pad(s, (0, 0) * (s.dim() - 2) + (0, width - s.shape[1])) for s in states]
        shapes = {tuple(s.shape[1:]) for s in states}
        if len(shapes) != 1:
            raise SWAStreamError(f"{where}: shapes differ across the states ({sorted(shapes)}): different configs?")
        return torch.cat(states, dim=0)
    if isinstance(first, (list, tuple)):
        if len({len(s) for s in states}) != 1:
            raise SWAStreamError(f"{where}: lengths differ across the states (different depths?)")
        return type(first)(cat_rows([s[i] for s in states], f"{where}.{i}", pad) for i in range(len(first)))
    if dataclasses.is_dataclass(first):
        return dataclasses.replace(first, **{
            f.name: cat_rows([getattr(s, f.name) for s in states], f"{where}.{f.name}", pad)
            for f in dataclasses.fields(first) if f.init
        })
    raise TypeError(f"cat_rows: cannot join {type(first).__name__}")


def as_rows(rows, batch: int) -> torch.Tensor:
    """Row indices from a list, a LongTensor or a bool mask (B,)."""
    rows = torch.as_tensor(rows)
    if rows.dtype == torch.bool:
        if rows.shape != (batch,):
            raise SWAStreamError(f"rows: a mask must have {batch} entries, got {tuple(rows.shape)}")
        rows = rows.nonzero().flatten()
    rows = rows.long().flatten()
    if rows.numel() and (rows.min() < -batch or rows.max() >= batch):
        raise SWAStreamError(f"rows: indices must be in 0 .. {batch - 1}, got {rows.tolist()}")
    return rows % batch if rows.numel() else rows


def zero_padding(y: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """y (B, T, ...) with each row's positions past counts[b] set to 0 (by `where`: padding may hold NaN)."""
    valid = valid_mask(counts, y.shape[1], y.device).view(*y.shape[:2], *[1] * (y.dim() - 2))
    return torch.where(valid, y, torch.zeros((), dtype=y.dtype, device=y.device))


def emit(y: torch.Tensor, counts: list[int], state, ragged: bool, what: str = "step"):
    """What a streaming module's `step` returns: (y, lengths (B,) int64, state) when the caller passed
    per-row counts (`ragged`), else (y, state), which needs every row to have emitted the same count.
    Positions past a row's length are zeros."""
    if not uniform(counts) and y.shape[1]:
        y = zero_padding(y, counts)
    if ragged:
        return y, torch.tensor(counts, dtype=torch.int64), state
    if not uniform(counts):
        raise SWAStreamError(f"{what}: the rows are at different points of their streams and emit different "
                             "counts; pass counts= to get per-row lengths")
    return y, state


def positions(values, batch: int) -> torch.Tensor:
    """(B,) int64 counts on the host from an int or per-row values."""
    t = torch.as_tensor(values, dtype=torch.int64).to("cpu")
    return t.expand(batch).clone() if t.dim() == 0 else t.clone()


def same_or_new(counts: torch.Tensor, before: list[int], after: list[int]) -> torch.Tensor:
    """Per-row counts after a step: the same tensor when no row's count changed (a steady stream's buffers
    hold the same amount every step; states never change their tensors in place), else a new one."""
    return counts if after == before else positions(after, len(after))


class RowsMixin:
    """`select(rows)` and `cat(states)` for a dataclass state whose tensors all lead with the batch."""

    _ragged_fields: tuple[str, ...] = ()  # tensors whose dim 1 is a ragged buffer (padded when joined)

    def select(self, rows):
        """The streams in `rows` (indices, a LongTensor or a (B,) bool mask), e.g. to remove finished ones."""
        return select_rows(self, as_rows(rows, _batch(self)))

    @classmethod
    def cat(cls, states: list):
        """One batch holding every row of `states` in order, e.g. to admit a new stream."""
        if not states:
            raise SWAStreamError(f"{cls.__name__}.cat: no states given")
        return cat_rows(list(states), "state", pad=cls._ragged_fields)


def _batch(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.shape[0]
    items = dataclasses.astuple(state) if dataclasses.is_dataclass(state) else state
    for item in items if isinstance(items, (list, tuple)) else ():
        if isinstance(item, torch.Tensor) and item.dim():
            return item.shape[0]
        if dataclasses.is_dataclass(item) or isinstance(item, (list, tuple)):
            found = _batch(item)
            if found is not None:
                return found
    return None
