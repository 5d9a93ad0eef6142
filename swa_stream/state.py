"""Stream state: per-layer key/value ring buffers plus the positions that lookahead holds back.

For a layer with window (left, right), answering the oldest query that is still open needs keys back
to `left` positions before it, and that query is `right` positions behind the newest input. So the
layer caches exactly C = left + right keys and values, in a ring where position p lives in slot
`p % C` (the arithmetic is in kernels/ring.py, next to the kernels that read it), and holds the
`right` newest positions (their residual input and their rotated query) until their right context has
arrived. Nothing here grows with the stream.

Every row of a batch is its own stream (ragged batching): `start` and `received` are (B,) integers, one
per stream, and `select` / `cat` take rows out of a batch or join batches between steps.

The shapes of a layer's state come from one function, `layer_state_shapes`; `init_state`, the byte count
(`state_bytes`, which `SWAConfig.state_bytes()` and `swa-stream info` report) and the check that refuses a
state made for another config all derive from it.

The state is a plain dataclass of tensors, passed in and returned explicitly: it can be moved with
`.to()`, saved with `to_tensors()` (e.g. into safetensors) and restored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from swa_stream.errors import SWAStreamError
from swa_stream.ragged import as_rows, cat_rows, positions, select_rows
from swa_stream.shapes import layer_state_shapes, state_bytes  # noqa: F401 - torch-free, for `info`


@dataclass
class LayerState:
    """One layer's stream state; C = left + right reach (dilated; the left part trimmed to the widest
    learned span), R = right reach. The variants' fields are None when the variant is off."""

    k: torch.Tensor  # (B, H, C, D) rotated keys, ring-ordered
    v: torch.Tensor  # (B, H, C, D) values, ring-ordered
    pending_x: torch.Tensor  # (B, R, d_model) residual input of the R newest positions, oldest first
    pending_q: torch.Tensor  # (B, H, R, D) their rotated queries
    pending_g: torch.Tensor | None = None  # (B, H, R, G) their scores of the global tokens
    sink_k: torch.Tensor | None = None  # (B, H, S, D) the stream's first S keys (zeros until they arrive)
    sink_v: torch.Tensor | None = None  # (B, H, S, D) and values
    global_max: torch.Tensor | None = None  # (B, H, G) each global token's running softmax: max score,
    global_sum: torch.Tensor | None = None  # (B, H, G) sum of exp(score - max),
    global_acc: torch.Tensor | None = None  # (B, H, G, D) and the weighted sum of values
    pool: torch.Tensor | None = None  # (B, stride - 1, d_model) inputs waiting for their pooling group,
    # left-aligned: a stream's `received` says how many are valid

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def global_carry(self):
        return None if self.global_max is None else (self.global_max, self.global_sum, self.global_acc)


@dataclass
class StreamState:
    """State of a batch of streams; every row is its own stream.

    `start` (B,) is the absolute position of each stream's first input; `received` (B,) counts the inputs
    each has taken so far (ints are accepted and broadcast). `bypass` (B, n, d_model), with downsampling
    only: the full-rate rows that wait for the pooled layers' outputs they will be added to, left-aligned
    (row b's count follows from its `received`).
    """

    start: torch.Tensor
    received: torch.Tensor
    layers: list[LayerState]
    bypass: torch.Tensor | None = None

    def __post_init__(self) -> None:
        batch = self.layers[0].k.shape[0]
        self.start, self.received = positions(self.start, batch), positions(self.received, batch)
        if self.start.shape != (batch,) or self.received.shape != (batch,):
            raise SWAStreamError(f"state: start and received must have one entry per row ({batch})")

    @classmethod
    def stepped(cls, state: StreamState, taken: int, layers: list[LayerState]) -> StreamState:
        """The state of a plain stack after every row of `state` took `taken` positions: built without
        `__post_init__`'s conversions and copies (a streaming step's hot path; `start` is shared, as
        positions are never changed in place)."""
        new = cls.__new__(cls)
        new.__dict__.update(start=state.start, received=state.received + taken, layers=layers, bypass=None)
        return new

    @property
    def batch_size(self) -> int:
        return self.layers[0].k.shape[0]

    @property
    def aligned(self) -> bool:
        """Have all rows received the same count? Then they emit the same counts for the same input."""
        return bool((self.received == self.received[0]).all()) if self.batch_size else True

    def select(self, rows) -> StreamState:
        """The streams in `rows` (indices, a LongTensor or a (B,) bool mask), e.g. to remove finished ones."""
        return select_rows(self, as_rows(rows, self.batch_size))

    @classmethod
    def cat(cls, states: list[StreamState]) -> StreamState:
        """One batch holding every row of `states` in order, e.g. to admit a new stream (`init_state(1)`)."""
        if not states:
            raise SWAStreamError("StreamState.cat: no states given")
        return cat_rows(list(states), "state", pad=("bypass",))

    def nbytes(self) -> int:
        tensors = [t for layer in self.layers for t in layer.tensors().values()]
        tensors += [] if self.bypass is None else [self.bypass]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, *args, **kwargs) -> StreamState:
        """Like `Tensor.to`: move or cast every tensor (positions stay int64 on the host)."""
        layers = [LayerState(**{n: t.to(*args, **kwargs) for n, t in ls.tensors().items()}) for ls in self.layers]
        bypass = None if self.bypass is None else self.bypass.to(*args, **kwargs)
        return StreamState(self.start, self.received, layers, bypass)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """A flat name -> tensor mapping, e.g. for `safetensors.torch.save_file`."""
        out = {"start": self.start.clone(), "received": self.received.clone()}
        if self.bypass is not None:
            out["bypass"] = self.bypass.contiguous()
        for i, layer in enumerate(self.layers):
            out.update({f"layers.{i}.{n}": t.contiguous() for n, t in layer.tensors().items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> StreamState:
        n_layers = len({name.split(".")[1] for name in tensors if name.startswith("layers.")})
        names = [f.name for f in fields(LayerState)]
        layers = [
            LayerState(**{n: tensors[f"layers.{i}.{n}"] for n in names if f"layers.{i}.{n}" in tensors})
            for i in range(n_layers)
        ]
        return cls(tensors["start"], tensors["received"], layers, tensors.get("bypass"))
