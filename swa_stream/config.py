"""SWAConfig: the encoder's fields, their validation, and the receptive-field / latency / cost math.

Window convention (FlashAttention's `window_size`): `window=(left, right)` lets query i attend key j
iff `i - left <= j <= i + right`. So `(255, 0)` is causal with 256 keys counting the query itself,
`(w, w)` is centred, and `right > 0` is lookahead. Positions are counted in the units of the
layer's own input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from numbers import Real

from swa_stream.errors import ConfigError

Window = tuple[int, int]

# Rotary angles repeat exactly every ROPE_PERIOD positions (see positions.py), so a window must be
# shorter than that for relative distances to stay unambiguous.
ROPE_PERIOD = 1 << 24


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def finite_number(name: str, value, *, none_ok: bool = False) -> float | None:
    """`value` as a float, or a one-line error naming the field: a string, a bool, NaN or inf is refused
    here, so that range checks after it never see a value that compares False both ways (NaN) or raise
    Python's own comparison error (a string)."""
    if value is None and none_ok:
        return None
    if not isinstance(value, Real) or isinstance(value, bool):
        raise ConfigError(f"{name}: must be a number{' or null' if none_ok else ''}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def in_range(name: str, value, lo: float | None = None, hi: float | None = None, *, integer: bool = False,
             above: bool = False, none_ok: bool = False):
    """A number field checked in one line: finite (`finite_number`), an int if `integer`, and >= lo (> lo
    with `above`) and <= hi; returns it unchanged (an int stays an int), or None where that is allowed."""
    if value is None and none_ok:
        return None
    if integer and not is_int(value):
        raise ConfigError(f"{name}: must be an integer{' or null' if none_ok else ''}, got {value!r}")
    number = finite_number(name, value, none_ok=none_ok)
    if lo is not None and (number <= lo if above else number < lo):
        raise ConfigError(f"{name}: must be {'>' if above else '>='} {lo:g}, got {value!r}")
    if hi is not None and number > hi:
        raise ConfigError(f"{name}: must be <= {hi:g}, got {value!r}")
    return value


def _pair(value, where: str) -> Window:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(is_int(v) for v in value):
        raise ConfigError(f"{where}: expected a (left, right) pair of integers, got {value!r}")
    left, right = value
    if left < 0 or right < 0:
        raise ConfigError(f"{where}: left and right must be >= 0, got ({left}, {right})")
    if left + right >= ROPE_PERIOD:
        raise ConfigError(f"{where}: left + right must be below {ROPE_PERIOD}, got {left + right}")
    return (left, right)


@dataclass
class SWAConfig:
    """Configuration of a streaming sliding-window-attention encoder.

    `window` is one `(left, right)` pair for every layer, or a list with one pair per layer
    (hierarchical windows); `dilation` and `downsample` likewise take one integer or one per layer.
    `__post_init__` stores each of these per-layer fields as a tuple of length n_layers, so code that reads
    them never branches on the form they were written in. `frame_rate` (input positions per `frame_unit`,
    e.g. 25 per "s" after 4x subsampling of 10 ms frames, or 1 per "bp" for DNA) only feeds the
    human-readable report.
    """

    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 4
    window: Window | Sequence[Window] = (128, 0)
    d_ff: int | None = None
    dropout: float = 0.0
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    frame_rate: float | None = None
    frame_unit: str = "s"
    # Variants (docs/variants.md); every one streams exactly.
    global_tokens: int = 0
    sink_tokens: int = 0
    dilation: int | Sequence[int] = 1
    downsample: int | Sequence[int] | None = None
    adaptive_span: bool = False
    span_ramp: int = 4
    span_penalty: float = 0.0

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model: {self.d_model} is not divisible by n_heads ({self.n_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(
                f"d_model: head size d_model / n_heads = {self.head_dim} must be even for rotary positions"
            )
        if self.d_ff is not None and (not is_int(self.d_ff) or self.d_ff <= 0):
            raise ConfigError(f"d_ff: must be a positive integer or null, got {self.d_ff!r}")
        self.dropout = finite_number("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout!r}")
        self.norm_eps = finite_number("norm_eps", self.norm_eps)
        if not self.norm_eps > 0:
            raise ConfigError(f"norm_eps: must be > 0, got {self.norm_eps!r}")
        self.rope_base = finite_number("rope_base", self.rope_base)
        if not self.rope_base > 1:
            raise ConfigError(f"rope_base: must be > 1, got {self.rope_base!r}")
        self.frame_rate = finite_number("frame_rate", self.frame_rate, none_ok=True)
        if self.frame_rate is not None and not self.frame_rate > 0:
            raise ConfigError(f"frame_rate: must be > 0 or null, got {self.frame_rate!r}")
        if not isinstance(self.frame_unit, str) or not self.frame_unit.strip():
            raise ConfigError(f"frame_unit: must be a name such as s or bp, got {self.frame_unit!r}")
        self._normalise_window()
        self._check_variants()

    def __setstate__(self, state: dict) -> None:
        # A checkpoint pickled before the per-layer fields were normalised (a single window pair,
        # downsample=None) is normalised on load, so the properties below see one form only.
        self.__dict__.update(state)
        self.__post_init__()

    def _normalise_window(self) -> None:
        """Store `window` as a tuple of n_layers (left, right) tuples: one pair is every layer's."""
        w = self.window
        is_single = isinstance(w, (list, tuple)) and len(w) == 2 and all(is_int(v) for v in w)
        if is_single:
            self.window = (_pair(w, "window"),) * self.n_layers
            return
        if not isinstance(w, (list, tuple)):
            raise ConfigError(f"window: expected (left, right) or a list of pairs, got {w!r}")
        if len(w) == 0:
            raise ConfigError("window: the per-layer list is empty; give one (left, right) pair per layer")
        pairs = tuple(_pair(p, f"window[{i}]") for i, p in enumerate(w))
        if len(pairs) != self.n_layers:
            raise ConfigError(
                f"window: {len(pairs)} per-layer pairs given but n_layers is {self.n_layers}"
            )
        self.window = pairs

    def _check_variants(self) -> None:
        for name in ("global_tokens", "sink_tokens"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise ConfigError(f"{name}: must be an integer >= 0, got {value!r}")
        self.dilation = self._per_layer_ints("dilation", self.dilation, 1)
        self.downsample = self._per_layer_ints("downsample", self.downsample, 1)
        if not isinstance(self.adaptive_span, bool):
            raise ConfigError(f"adaptive_span: must be true or false, got {self.adaptive_span!r}")
        if not is_int(self.span_ramp) or self.span_ramp < 1:
            raise ConfigError(f"span_ramp: must be a positive integer, got {self.span_ramp!r}")
        self.span_penalty = finite_number("span_penalty", self.span_penalty)
        if not self.span_penalty >= 0:
            raise ConfigError(f"span_penalty: must be >= 0, got {self.span_penalty!r}")
        for i, ((left, right), d) in enumerate(zip(self.window, self.dilation, strict=True)):
            if (left + right) * d >= ROPE_PERIOD:
                raise ConfigError(f"dilation[{i}]: (left + right) * dilation must be below {ROPE_PERIOD}")

    def _per_layer_ints(self, name: str, value, default: int) -> tuple[int, ...]:
        """A tuple of n_layers positive integers from one integer (every layer's), a list with one per
        layer, or None (`default` for every layer)."""
        if value is None:
            return (default,) * self.n_layers
        per_layer = isinstance(value, (list, tuple))
        values = tuple(value) if per_layer else (value,)
        if not all(is_int(v) and v >= 1 for v in values):
            raise ConfigError(f"{name}: expected positive integers, got {value!r}")
        if per_layer and len(values) != self.n_layers:
            raise ConfigError(f"{name}: {len(values)} per-layer values given but n_layers is {self.n_layers}")
        return values if per_layer else values * self.n_layers

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def windows(self) -> list[Window]:
        """The `(left, right)` pair of each layer."""
        return list(self.window)

    @property
    def dilations(self) -> list[int]:
        return list(self.dilation)

    @property
    def strides(self) -> list[int]:
        """Layer i's input is layer i-1's output mean-pooled by strides[i] (the first layer's: the input)."""
        return list(self.downsample)

    @property
    def rates(self) -> list[int]:
        """Input positions per position of layer i (the product of the strides up to and including i)."""
        out, rate = [], 1
        for s in self.strides:
            rate *= s
            out.append(rate)
        return out

    @property
    def reaches(self) -> list[Window]:
        """(left, right) distance, in the layer's own positions, to the farthest key a query sees:
        the window counted in dilated steps."""
        return [(left * d, right * d) for (left, right), d in zip(self.windows, self.dilations, strict=True)]

    @property
    def has_extras(self) -> bool:
        """Keys outside the window: global tokens or sinks (the receptive field is then the whole past)."""
        return self.global_tokens > 0 or self.sink_tokens > 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    def receptive_field(self, n_layers: int | None = None) -> Window:
        """(left, right) input positions that reach one output of the first `n_layers` layers, through
        the windows (global tokens and sinks reach further back: see `has_extras`).

        Exact, not estimated. Without downsampling each layer widens the field by its reach, so the stack
        sees `(sum of left * dilation, sum of right * dilation)`. A pooled layer's position covers `rate`
        input positions, so the field is traced back interval by interval, for the worst phase of the
        output position within its pooled group (outputs are repeated back to the input rate).
        """
        n = self.n_layers if n_layers is None else n_layers
        rate = self.rates[n - 1] if n else 1
        worst_left = worst_right = 0
        for phase in range(rate):
            lo = hi = 0  # in positions of the current layer's output, relative to the output's group
            for i in reversed(range(n)):
                left, right = self.reaches[i]
                lo, hi = lo - left, hi + right
                lo, hi = lo * self.strides[i], hi * self.strides[i] + self.strides[i] - 1
            worst_left, worst_right = max(worst_left, phase - lo), max(worst_right, hi - phase)
        return (worst_left, worst_right)

    @property
    def lookahead(self) -> int:
        """Delay in input positions between receiving a position and `step` emitting it."""
        return self.receptive_field()[1]

    def layer_state_bytes(self, layer: int, element_size: int = 4, left: int | None = None) -> int:
        """Bytes of one layer's state per stream: it caches the keys and values of its reach (left + right,
        in dilated steps; `left` overrides the left reach, e.g. a learned span), holds back `right`
        pending positions (their residual input and their query), keeps the sinks' keys and values, each
        global token's running (max, sum, weighted value) per head (and the pending queries' scores of
        it), and up to stride - 1 inputs to pool. Derived from the state's one shape definition."""
        from swa_stream.shapes import layer_bytes

        return layer_bytes(self, layer, element_size, left)

    def bypass_rows(self) -> int:
        """At most how many full-rate rows wait in a stream for the pooled layers' outputs: the lookahead
        that the layers from the first pooled one on add."""
        first = next((i for i, s in enumerate(self.strides) if s > 1), None)
        return 0 if first is None else self.receptive_field()[1] - self.receptive_field(first)[1]

    def state_bytes(self, element_size: int = 4) -> int:
        """Bytes of stream state per stream, over all layers (and the bypass of downsampled stacks)."""
        from swa_stream.shapes import state_bytes

        return state_bytes(self, element_size)

    def param_count(self) -> int:
        d, f = self.d_model, self.ffn_dim
        per_layer = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d)
        per_layer += 2 * self.global_tokens * d + (self.n_heads if self.adaptive_span else 0)
        return self.n_layers * per_layer + 2 * d

    def flops_per_position(self) -> int:
        """Multiply-add FLOPs (2 per MAC) to encode one input position at steady state. A pooled layer
        costs 1/rate per input position; a dilated window sees as many keys as a plain one; each sink
        and global token adds a key, and each global token a running summary (scores and update)."""
        d, f = self.d_model, self.ffn_dim
        total = 0.0
        for (left, right), rate in zip(self.windows, self.rates, strict=True):
            projections = 2 * (3 * d * d + d * d + 2 * d * f)
            keys = left + right + 1 + self.sink_tokens + self.global_tokens
            attention = 2 * 2 * d * keys + 2 * 2 * d * self.global_tokens  # scores and weighted sums
            total += (projections + attention) / rate
        return round(total)

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON/YAML values (lists, never tuples). A per-layer field that every layer shares is written
        once, as a user would write it, so a bundle's config.json stays readable and valid when its
        n_layers is edited."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("window", "dilation", "downsample"):
            values = [list(v) if isinstance(v, tuple) else v for v in getattr(self, name)]
            out[name] = values[0] if all(v == values[0] for v in values) else values
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SWAConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: not a field of SWAConfig (known: {', '.join(sorted(known))})")
        return cls(**data)

