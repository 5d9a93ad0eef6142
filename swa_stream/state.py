"""Stream state: per-layer key/value ring buffers plus the positions that lookahead holds back.

For a layer with window (left, right), answering the oldest query that is still open needs keys back
to `left` positions before it, and that query is `right` positions behind the newest input. So the
layer caches exactly C = left + right keys and values, in a ring where position p lives in slot
`p % C` (the arithmetic is in kernels/ring.py, next to the kernels that read it), and holds the
`right` newest positions (their residual input and their rotated query) until their right context has
arrived. Nothing here grows with the stream.

The state is a plain dataclass of tensors plus two integers, passed in and returned explicitly: it can
be moved with `.to()`, saved with `to_tensors()` (e.g. into safetensors) and restored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


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
    pool: torch.Tensor | None = None  # (B, k < stride, d_model) inputs waiting for their pooling group

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def global_carry(self):
        return None if self.global_max is None else (self.global_max, self.global_sum, self.global_acc)


@dataclass
class StreamState:
    """State of a batch of streams that advance together.

    `start` is the absolute position of the first input; `received` counts the inputs taken so far.
    `bypass` (B, n, d_model), with downsampling only: the full-rate rows that wait for the pooled layers'
    outputs they will be added to.
    """

    start: int
    received: int
    layers: list[LayerState]
    bypass: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.layers[0].k.shape[0]

    def layer_inputs_received(self, rights: list[int], strides: list[int] | None = None) -> list[int]:
        """How many positions each layer has received. Layer i pools what reaches it by strides[i] (whole
        groups only, until the end of the stream); layer i+1 is fed what layer i has emitted, which is
        everything layer i received except the `right` newest positions it still holds."""
        strides = strides or [1] * len(rights)
        counts, fed = [], self.received
        for right, stride in zip(rights, strides, strict=True):
            counts.append(fed // stride)
            fed = max(0, counts[-1] - right)
        return counts

    def nbytes(self) -> int:
        tensors = [t for layer in self.layers for t in layer.tensors().values()]
        tensors += [] if self.bypass is None else [self.bypass]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, *args, **kwargs) -> StreamState:
        """Like `Tensor.to`: move or cast every tensor (positions are plain integers)."""
        layers = [LayerState(**{n: t.to(*args, **kwargs) for n, t in ls.tensors().items()}) for ls in self.layers]
        bypass = None if self.bypass is None else self.bypass.to(*args, **kwargs)
        return StreamState(self.start, self.received, layers, bypass)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """A flat name -> tensor mapping, e.g. for `safetensors.torch.save_file`."""
        out = {"start": torch.tensor(self.start), "received": torch.tensor(self.received)}
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
        return cls(int(tensors["start"]), int(tensors["received"]), layers, tensors.get("bypass"))
