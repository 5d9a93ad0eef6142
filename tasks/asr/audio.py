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
from fractions import Fraction
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


MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000  # what audio interfaces and files actually use
MAX_KERNEL = 1 << 21  # taps of the resampling kernel (8 MiB in float32); 44.1 kHz -> 16 kHz needs 76,000


def check_sample_rate(rate, name: str) -> int:
    """`rate` as an int, or SWAStreamError naming `name` for a rate no audio has (0, -1, 2147483647)."""
    integer = isinstance(rate, (int, np.integer)) and not isinstance(rate, bool)
    if not integer or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise SWAStreamError(f"{name}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE:,}-{MAX_SAMPLE_RATE:,} Hz")
    return int(rate)


def _kernel_taps(orig: int, new: int) -> int:
    """Taps of torchaudio's sinc kernel for the reduced ratio orig:new (its default 6 zero crossings, 0.99
    rolloff), without building it."""
    width = math.ceil(6 * orig / (min(orig, new) * 0.99))
    return new * (orig + 2 * width)


def resample_ratio(orig: int, new: int) -> tuple[int, int]:
    """The reduced ratio (orig, new) the resampler uses: exact where its kernel fits in MAX_KERNEL taps, else
    the closest ratio whose kernel fits (see the module docstring)."""
    gcd = math.gcd(orig, new)
    exact = Fraction(orig // gcd, new // gcd)
    ratio, limit = exact, exact.denominator
    while _kernel_taps(ratio.numerator, ratio.denominator) > MAX_KERNEL:
        limit = max(1, limit // 2)
        ratio = exact.limit_denominator(limit)
    return ratio.numerator, ratio.denominator


def finite_samples(samples: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(samples with NaN and +-Inf replaced by 0, how many were, the index of the first or -1). One NaN would
    otherwise spread through every output that can see it: seconds of silence in a transcript."""
    bad = ~np.isfinite(samples)
    count = int(bad.sum())
    if not count:
        return samples, 0, -1
    return np.where(bad, np.zeros((), samples.dtype), samples), count, int(np.argmax(bad))


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(N,) or (N, channels) -> (N,) float32, channels averaged."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def read_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """A whole file (wav, flac, ogg, ... whatever libsndfile reads) -> (N,) float32 mono at `sample_rate`.
    Missing, unreadable or empty files raise SWAStreamError naming the file."""
    import soundfile as sf

    path = Path(path)
    if path.is_dir():
        raise SWAStreamError(f"{path}: is a directory, not an audio file")
    if not path.is_file():
        raise SWAStreamError(f"{path}: no such audio file")
    try:
        with open(path, "rb") as f:  # libsndfile says "System error." for what the OS would name
            samples, rate = sf.read(f, dtype="float32", always_2d=True)
    except OSError as err:
        raise SWAStreamError(f"{path}: cannot read: {(err.strerror or str(err)).lower()}") from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise SWAStreamError(f"{path}: cannot read audio ({_short(err)})") from None
    if samples.shape[0] == 0:
        raise SWAStreamError(f"{path}: the file holds no audio samples")
    samples, bad, _ = finite_samples(to_mono(samples))
    if bad:  # training data with NaN would poison the loss; repairing it silently would hide a broken file
        raise SWAStreamError(f"{path}: {bad} samples are NaN or infinite; repair or remove the file")
    return resample(torch.from_numpy(samples), check_sample_rate(rate, str(path)), sample_rate)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text.split(": ", 1)[-1] if "Error opening" in text else text


def resample(audio: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """(..., N) at `orig` Hz -> (..., M) at `new` Hz (torchaudio's sinc resampler; identity if equal)."""
    if orig == new or audio.shape[-1] == 0:  # torchaudio cannot reshape an empty signal
        return audio
    return AF.resample(audio, *resample_ratio(int(orig), int(new)))


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
        self.orig_rate, self.new_rate = (check_sample_rate(r, "sample rate") for r in (orig, new))
        self.orig, self.new = resample_ratio(self.orig_rate, self.new_rate)
        self.identity = self.orig == self.new
        if not self.identity:
            if _get_sinc_resample_kernel is None:  # pragma: no cover
                raise SWAStreamError("resampling needs torchaudio's sinc kernel, which this torchaudio lacks")
            self.kernel, self.width = _get_sinc_resample_kernel(self.orig, self.new, 1)

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
