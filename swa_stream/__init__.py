"""swa-stream: exact streaming sliding-window attention for unbounded sequences.

The names that need torch (the encoder, its state, the attention kernels) load on first use (PEP 562), so
that `swa-stream --help` and `swa-stream info --config` start without paying torch's import time.
"""

from importlib import import_module

from swa_stream.config import SWAConfig
from swa_stream.errors import ConfigError, SWAStreamError

__version__ = "0.1.0"

_LAZY = {
    "SWAEncoder": "swa_stream.encoder",
    "sliding_window_attention": "swa_stream.kernels",
    "StreamState": "swa_stream.state",
    "LayerState": "swa_stream.state",
}

__all__ = ["SWAConfig", "SWAEncoder", "sliding_window_attention", "StreamState", "LayerState", "SWAStreamError",
           "ConfigError"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'swa_stream' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
