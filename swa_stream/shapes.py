"""The one definition of a stream state's shapes, and its byte count, in plain Python (no torch).

`swa_stream.state` builds states from these shapes; `swa-stream info` reports their bytes without importing
torch, so that it starts in a fraction of a second.
"""

from __future__ import annotations

import math


def layer_state_shapes(cfg, layer: int, batch: int = 1, cache_left: int | None = None) -> dict[str, tuple]:
    """The one definition of a layer's state: field name -> shape, for `batch` streams. `cache_left`
    overrides the keys kept back (adaptive span trims it to the widest learned span)."""
    reach_left, right = cfg.reaches[layer]
    capacity = (reach_left if cache_left is None else cache_left) + right
    b, h, dh, d, g, s = batch, cfg.n_heads, cfg.head_dim, cfg.d_model, cfg.global_tokens, cfg.sink_tokens
    shapes = {"k": (b, h, capacity, dh), "v": (b, h, capacity, dh), "pending_x": (b, right, d),
              "pending_q": (b, h, right, dh)}
    if g:
        shapes.update(pending_g=(b, h, right, g), global_max=(b, h, g), global_sum=(b, h, g),
                      global_acc=(b, h, g, dh))
    if s:
        shapes.update(sink_k=(b, h, s, dh), sink_v=(b, h, s, dh))
    if cfg.strides[layer] > 1:
        shapes["pool"] = (b, cfg.strides[layer] - 1, d)
    return shapes


def state_bytes(cfg, element_size: int = 4, cache_lefts: list[int] | None = None) -> int:
    """Bytes of stream state per stream, derived from `layer_state_shapes`, plus the full-rate rows that wait
    in a downsampled stack's bypass (at most `cfg.bypass_rows()`). Positions (two integers) are not counted.
    Call: `swa_stream.state.state_bytes(cfg)`; for a built encoder `encoder.state_bytes()`."""
    lefts = [None] * cfg.n_layers if cache_lefts is None else cache_lefts
    layers = sum(layer_bytes(cfg, i, element_size, left) for i, left in enumerate(lefts))
    return layers + cfg.bypass_rows() * cfg.d_model * element_size


def layer_bytes(cfg, layer: int, element_size: int = 4, cache_left: int | None = None) -> int:
    """Bytes of one layer's state per stream, from `layer_state_shapes`."""
    return element_size * sum(math.prod(shape) for shape in layer_state_shapes(cfg, layer, 1, cache_left).values())
