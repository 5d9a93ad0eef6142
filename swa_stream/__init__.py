"""swa-stream: exact streaming sliding-window attention for unbounded sequences."""

from swa_stream.config import SWAConfig
from swa_stream.encoder import SWAEncoder
from swa_stream.errors import ConfigError, SWAStreamError
from swa_stream.kernels import sliding_window_attention
from swa_stream.state import LayerState, StreamState

__version__ = "0.1.0"

__all__ = [
    "SWAConfig",
    "SWAEncoder",
    "sliding_window_attention",
    "StreamState",
    "LayerState",
    "SWAStreamError",
    "ConfigError",
]
