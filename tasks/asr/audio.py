"""Audio in: files through soundfile (never torchaudio's I/O, which needs torchcodec from 2.9 on), downmix
to mono, and resampling with torchaudio's band-limited sinc kernel, offline or as an exact stream.

`Resampler` follows the project's streaming protocol: `cat(step outputs + flush)` equals
`torchaudio.functional.resample` of the whole signal, sample for sample, for any chunking. Output block j
(`new` samples, rates reduced by their gcd to `orig` -> `new`) reads input samples
`[j*orig - width, j*orig + orig + width)`, so it is final once input sample `j*orig + orig + width - 1`
has arrived; `flush` zero-pads the end exactly as the offline function does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from swa_stream.errors import SWAStreamError

try:  # the private helper is what `resample` itself calls; reusing it keeps the stream identical
    from torchaudio.functional.functional import _get_sinc_resample_kernel
except ImportError:  # pragma: no cover - only if torchaudio moves it
    _get_sinc_resample_kernel = None


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(N,) or (N, channels) -> (N,) float32, channels averaged."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def read_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """A whole file (wav, flac, ogg, ... whatever libsndfile reads) -> (N,) float32 mono at `sample_rate`.
    Missing, unreadable or empty files raise SWAStreamError naming the file."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise SWAStreamError(f"{path}: no such audio file")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise SWAStreamError(f"{path}: cannot read audio ({_short(err)})") from None
    if samples.shape[0] == 0:
        raise SWAStreamError(f"{path}: the file holds no audio samples")
    audio = torch.from_numpy(to_mono(samples))
    return resample(audio, rate, sample_rate)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text.split(": ", 1)[-1] if "Error opening" in text else text


def resample(audio: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """(..., N) at `orig` Hz -> (..., M) at `new` Hz (torchaudio's sinc resampler; identity if equal)."""
    if orig == new or audio.shape[-1] == 0:  # torchaudio cannot reshape an empty signal
        return audio
    return AF.resample(audio, int(orig), int(new))


# ---- streaming resampler --------------------------------------------------------------------------
@dataclass
class ResamplerState:
    """`buffer` (C, n): input samples from position `start - width` on (zeros before the stream began),
    where `start` is the first input sample of the next output block."""

    buffer: torch.Tensor
    received: int  # input samples seen
    emitted: int  # output samples emitted


class Resampler:
    """Streams `orig` Hz -> `new` Hz; (C, t) chunks in, (C, t') out; see the module docstring."""

    def __init__(self, orig: int, new: int):
        if orig <= 0 or new <= 0:
            raise SWAStreamError(f"sample rate: must be positive, got {orig} -> {new}")
        self.orig_rate, self.new_rate = int(orig), int(new)
        gcd = math.gcd(self.orig_rate, self.new_rate)
        self.orig, self.new = self.orig_rate // gcd, self.new_rate // gcd
        self.identity = self.orig == self.new
        if not self.identity:
            if _get_sinc_resample_kernel is None:  # pragma: no cover
                raise SWAStreamError("resampling needs torchaudio's sinc kernel, which this torchaudio lacks")
            self.kernel, self.width = _get_sinc_resample_kernel(self.orig_rate, self.new_rate, gcd)

    def init_state(self, channels: int = 1) -> ResamplerState:
        """State for `channels` signals streamed together (chunks are (channels, t))."""
        width = 0 if self.identity else self.width
        return ResamplerState(torch.zeros(channels, width), 0, 0)

    def _blocks(self, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """Output blocks 0..n_blocks-1 of the input x that starts `width` samples before block 0."""
        if n_blocks <= 0:
            return x.new_zeros(x.shape[0], 0)
        span = (n_blocks - 1) * self.orig + self.kernel.shape[-1]
        y = F.conv1d(x[:, None, :span], self.kernel.to(x.dtype), stride=self.orig)
        return y.transpose(1, 2).reshape(x.shape[0], -1)

    def step(self, chunk: torch.Tensor, state: ResamplerState) -> tuple[torch.Tensor, ResamplerState]:
        """chunk (C, t) -> (C, t') output samples that became final, and the next state."""
        if self.identity:
            return chunk, ResamplerState(state.buffer, state.received + chunk.shape[1], state.emitted + chunk.shape[1])
        x = torch.cat([state.buffer, chunk.to(state.buffer.dtype)], dim=1)
        n_blocks = max(0, (x.shape[1] - self.kernel.shape[-1]) // self.orig + 1)
        y = self._blocks(x, n_blocks)
        rest = x[:, n_blocks * self.orig :]
        state = ResamplerState(rest, state.received + chunk.shape[1], state.emitted + y.shape[1])
        return y, state

    def flush(self, state: ResamplerState) -> torch.Tensor:
        """The rest of the output, as `torchaudio.functional.resample` computes the end of a signal."""
        total = math.ceil(self.new * state.received / self.orig)
        if self.identity or total <= state.emitted:
            return state.buffer.new_zeros(state.buffer.shape[0], 0)
        x = F.pad(state.buffer, (0, self.width + self.orig))  # the zeros the offline function pads with
        n_blocks = max(0, (x.shape[1] - self.kernel.shape[-1]) // self.orig + 1)
        return self._blocks(x, n_blocks)[:, : total - state.emitted]
