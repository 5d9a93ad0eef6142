"""The ASR frontend: 16 kHz audio -> log-mel frames -> fixed normalisation [-> running mean] -> causal 4x subsampling.

Every part follows the project's one protocol (`init_state` / `step` / `flush` / `forward`), and a stream
emits exactly what `forward` computes. Alignment, for a window of W samples, a hop of H and N samples:

    log-mel frames   F = 1 + (N - W) // H if N >= W else 0     (center=False: only complete windows)
                     frame f covers samples [f*H, f*H + W)
    subsampled       T_out = F // S                             (S = subsampling, a power of two)
                     output j's newest input frame is j*S + S - 1

So output j is final, and is emitted, as soon as sample (j*S + S - 1)*H + W - 1 has arrived; nothing is
held back for the end, and `flush` emits nothing (an incomplete final window or subsampling block is
dropped, as offline drops it). At 16 kHz, W = 400, H = 160, S = 4 that is 25 outputs per second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from swa_stream.encoder import aten_gelu
from swa_stream.errors import ConfigError
from swa_stream.lengths import length_mask, zero_past
from swa_stream.ragged import RowsMixin, as_counts, emit, positions, ragged_cat, same_or_new, take
from swa_stream.tasks.asr.schema import FrontendConfig  # torch-free, so that `info` needs no torch


# ---- log-mel --------------------------------------------------------------------------------------
@dataclass
class LogMelState:
    """Samples not yet in a complete window. `buffer` (B, W-1) holds them left-aligned; `count` (B,) int64
    says how many are valid in each row (every row is its own stream)."""

    buffer: torch.Tensor
    count: torch.Tensor


class LogMel(nn.Module):
    """(B, N) audio -> (B, F, n_mels) log-mel, F = 1 + (N - win) // hop (0 if N < win); see module docstring.

    Power spectrum of Hann-windowed frames with n_fft = win (torchaudio MelSpectrogram, center=False, HTK
    mel scale, no filter normalisation), then log(mel + eps).
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, win: int = 400, hop: int = 160, eps: float = 1e-6):
        super().__init__()
        self.n_mels, self.win, self.hop, self.eps = n_mels, win, hop, eps
        # center=False: a frame depends only on its own samples, so streaming needs no lookahead or padding.
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=win, win_length=win, hop_length=hop, n_mels=n_mels, center=False, power=2.0
        )

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Complete frames in each row: (B,) sample counts -> (B,) frame counts."""
        return torch.where(lengths >= self.win, (lengths - self.win) // self.hop + 1, 0)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n < self.win:  # the transform rejects signals shorter than one window
            return x.new_zeros(x.shape[0], 0, self.n_mels)
        # torchaudio's MelSpectrogram (it holds the window and the filters) in fewer calls: the Hann-windowed
        # frames' real FFT, as torch.stft takes it, |X|^2 as X * conj(X) (no square root), the mel filters.
        frames = x.unfold(1, self.win, self.hop) * self.mel.spectrogram.window
        spectrum = torch.fft.rfft(frames)
        power = torch.view_as_real(spectrum * spectrum.conj())[..., 0]
        return torch.log(torch.matmul(power, self.mel.mel_scale.fb) + self.eps)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """x (B, N) -> (B, F, n_mels); with lengths (B,), returns (features, frame_lengths) and zeroes the
        frames past each row's length."""
        y = self._frames(x)
        if lengths is None:
            return y
        frames = self.frame_lengths(lengths.to(x.device))
        return zero_past(y, frames), frames

    def init_state(self, batch_size: int, device=None, dtype=None) -> LogMelState:
        ref = self.mel.spectrogram.window
        buffer = torch.zeros(batch_size, self.win - 1, device=device or ref.device, dtype=dtype or ref.dtype)
        return LogMelState(buffer, positions(0, batch_size))

    def step(self, chunk: torch.Tensor, state: LogMelState, counts=None):
        """chunk (B, t) samples, any t >= 0 -> (B, f, n_mels), the frames whose windows completed, and the
        state; with counts (B,) (row b's first counts[b] samples are valid): (frames, lengths (B,), state)."""
        return emit(*self.step_rows(chunk, state, as_counts(counts, *chunk.shape)), counts is not None, "step")

    def step_rows(self, chunk: torch.Tensor, state: LogMelState, counts: list[int]):
        """`step` on a ragged chunk: (frames (B, f, n_mels), per-row frame counts, state)."""
        held = state.count.tolist()
        x = ragged_cat(state.buffer, held, chunk.to(state.buffer.dtype))
        total = [h + c for h, c in zip(held, counts, strict=True)]
        frames = [(n - self.win) // self.hop + 1 if n >= self.win else 0 for n in total]
        most = max(frames, default=0)
        # The same transform on just the complete windows: each frame is computed exactly as offline.
        y = self._frames(x[:, : (most - 1) * self.hop + self.win] if most else x[:, :0])
        used = [f * self.hop for f in frames]  # the rest, below win samples, starts the next window on
        rest = take(x, used, self.win - 1).clone()
        left = [n - u for n, u in zip(total, used, strict=True)]
        return y, frames, LogMelState(rest, same_or_new(state.count, held, left))

    def flush(self, state: LogMelState) -> torch.Tensor:
        """(B, 0, n_mels): the buffered samples never fill a window, and offline drops them too."""
        return state.buffer.new_zeros(state.buffer.shape[0], 0, self.n_mels)


# ---- normalisation --------------------------------------------------------------------------------
class FeatureNorm(nn.Module):
    """(B, T, n_mels) -> (x - mean) / std with fixed per-mel statistics stored as buffers (so they travel
    in the model's state_dict). Never per-utterance statistics: those would make early frames of a stream
    depend on later audio. Stateless, so a stream just calls `forward` on each chunk."""

    def __init__(self, n_mels: int = 80):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def estimate(self, batches: Iterable, min_std: float = 1e-5) -> FeatureNorm:
        """Set mean/std in place from features, each batch either (B, T, n_mels) or a pair (features,
        frame_lengths) whose padding frames are left out. Sums in float64 so long corpora stay exact."""
        total = torch.zeros((), dtype=torch.float64)
        s1 = torch.zeros_like(self.mean, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for batch in batches:
            feats, lengths = batch if isinstance(batch, (tuple, list)) else (batch, None)
            feats = feats.to(device=s1.device, dtype=torch.float64)
            if lengths is not None:
                feats = feats[length_mask(lengths.to(s1.device), feats.shape[1])]
            feats = feats.reshape(-1, feats.shape[-1])
            total, s1, s2 = total + feats.shape[0], s1 + feats.sum(0), s2 + (feats * feats).sum(0)
        if total == 0:
            raise ValueError("FeatureNorm.estimate: no feature frames given")
        mean = s1 / total
        var = (s2 / total - mean * mean).clamp_min(0)
        self.mean.copy_(mean)
        self.std.copy_(var.sqrt().clamp_min(min_std))
        return self


class RunningMean(nn.Module):
    """A streaming mean normaliser: each frame, less the running mean of the frames so far (itself
    included), per mel bin. m_t = m_{t-1} + a (x_t - m_{t-1}), m_{-1} = 0 (FeatureNorm's global mean), and
    a = 1 / (time_constant x frames per second), so the mean forgets with that time constant. A log-mel
    shift common to every bin (a speech level) or per bin (a microphone's or a room's colouring) fades
    from the output as the mean learns it. The same recurrence, frame by frame, offline and in a stream,
    so a stream emits exactly what `forward` computes. Its state is the mean, (B, n_mels)."""

    def __init__(self, n_mels: int, alpha: float):
        super().__init__()
        self.n_mels, self.alpha = n_mels, float(alpha)

    def init_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.n_mels, device=device, dtype=dtype)

    def run(self, x: torch.Tensor, mean: torch.Tensor, frames: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, t, n_mels), row b's first frames[b] valid -> (normalised x, the mean after each row's last
        valid frame). Frames past a row's count do not move its mean (padding: they are zeroed later)."""
        most = max(frames, default=0)
        if not most:
            return x, mean
        out, a = [], self.alpha
        ragged = min(frames) < most
        valid = torch.tensor(frames, device=x.device)[:, None] > torch.arange(most, device=x.device) if ragged else None
        for t in range(most):
            xt = x[:, t]
            moved = mean + a * (xt - mean)
            mean = torch.where(valid[:, t, None], moved, mean) if ragged else moved
            out.append(xt - mean)
        y = torch.stack(out, dim=1)
        return (torch.cat([y, x[:, most:]], dim=1) if x.shape[1] > most else y), mean

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, n_mels) -> the same, normalised from a zero mean at frame 0; `frames` (B,) valid counts."""
        counts = [x.shape[1]] * x.shape[0] if frames is None else frames.tolist()
        return self.run(x, self.init_state(x.shape[0], x.device, x.dtype), counts)[0]


# ---- causal subsampling ---------------------------------------------------------------------------
@dataclass
class ConvState:
    """Per stride-2 stage: `held[i]` (B, C_i, K-1, F_i) input frames not yet consumed, left-aligned, of
    which `counts[i]` are valid. A fresh stage holds K - stride zero frames: its causal left padding."""

    held: list[torch.Tensor]
    counts: list[torch.Tensor]  # (B,) int64 each


class _CausalStage(nn.Module):
    """Conv2d over (time, freq), kernel 3, stride 2, then GELU. Time is left-padded by kernel - stride = 1
    frame, so output i sees input frames 2i-1, 2i, 2i+1: T frames give T // 2 outputs, each final as soon
    as its newest frame arrives. Frequency is padded by 1 on both sides: F bins -> ceil(F / 2)."""

    K, S = 3, 2
    PAD = K - S

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, self.K, stride=self.S, padding=(0, 1))

    def _valid(self, x: torch.Tensor) -> torch.Tensor:
        """Unpadded convolution in time: x (B, C, t, F) -> (B, C', (t - K) // S + 1, F')."""
        if x.shape[2] < self.K:
            f_out = (x.shape[3] - 1) // 2 + 1
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0, f_out)
        # Channels-last: torch then convolves with oneDNN, at a streaming step's size (32 x 9 x 40 in) in
        # 17 instead of 43 microseconds (a training batch takes the same time either way). The GELU takes
        # ATen's own kernel (`aten_gelu`), not oneDNN's slower set-up: the first stage's output (one input
        # channel) is contiguous, and its GELU took 45 of a step's 2,000 microseconds that way.
        return aten_gelu(self.conv(x.contiguous(memory_format=torch.channels_last)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._valid(F.pad(x, (0, 0, self.PAD, 0)))

    def step(self, x: torch.Tensor, held: torch.Tensor, count: list[int], new: list[int]):
        """x (B, C, t, F), row b's first new[b] frames valid, after held[b]'s first count[b] ->
        (outputs, their per-row counts, frames held, their per-row counts)."""
        x = ragged_cat(held, count, x, dim=2)
        total = [c + n for c, n in zip(count, new, strict=True)]
        outs = [(n - self.K) // self.S + 1 if n >= self.K else 0 for n in total]
        y = self._valid(x)[:, :, : max(outs, default=0)]
        used = [o * self.S for o in outs]  # at most K - 1 frames left: the next output's oldest inputs on
        rest = take(x, used, self.K - 1, dim=2).clone()
        return y, outs, rest, [n - u for n, u in zip(total, used, strict=True)]


class ConvSubsampling(nn.Module):
    """(B, T, n_mels) -> (B, T // subsampling, d_model): log2(subsampling) causal stride-2 stages, then a
    Linear over (channels x remaining frequency bins). Output j depends on input frames <= j*S + S - 1."""

    def __init__(self, n_mels: int = 80, d_model: int = 256, channels: int = 128, subsampling: int = 4):
        super().__init__()
        n_stages = int(math.log2(subsampling))
        if 2**n_stages != subsampling:
            raise ConfigError(f"subsampling: must be a power of two, got {subsampling!r}")
        self.subsampling = subsampling
        self.stages = nn.ModuleList(_CausalStage(1 if i == 0 else channels, channels) for i in range(n_stages))
        self.freq_in = [n_mels]
        for _ in range(n_stages):
            self.freq_in.append((self.freq_in[-1] - 1) // 2 + 1)
        self.channels = channels
        self.out = nn.Linear(channels * self.freq_in[-1], d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input frame counts -> (B,) output frame counts."""
        return lengths // self.subsampling

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        b, c, t, f = h.shape
        return self.out(h.permute(0, 2, 1, 3).reshape(b, t, c * f))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """x (B, T, n_mels) -> (B, T_out, d_model); with lengths (B,), returns (output, output_lengths) and
        zeroes the frames past each row's length. Padding frames never reach valid outputs (causality)."""
        h = x[:, None]
        for stage in self.stages:
            h = stage(h)
        y = self._project(h)
        if lengths is None:
            return y
        out_lengths = self.output_lengths(lengths.to(x.device))
        return zero_past(y, out_lengths), out_lengths

    def init_state(self, batch_size: int, device=None, dtype=None) -> ConvState:
        ref = self.out.weight
        device, dtype = device or ref.device, dtype or ref.dtype
        held = [
            torch.zeros(batch_size, 1 if i == 0 else self.channels, _CausalStage.K - 1, f, device=device, dtype=dtype)
            for i, f in enumerate(self.freq_in[:-1])
        ]
        return ConvState(held, [positions(_CausalStage.PAD, batch_size) for _ in self.stages])

    def step(self, chunk: torch.Tensor, state: ConvState, counts=None):
        """chunk (B, t, n_mels), any t >= 0 -> (B, t_out, d_model), the outputs whose inputs are complete, and
        the state; with counts (B,) (valid frames per row): (outputs, lengths (B,), state)."""
        return emit(*self.step_rows(chunk, state, as_counts(counts, *chunk.shape[:2])), counts is not None, "step")

    def step_rows(self, chunk: torch.Tensor, state: ConvState, counts: list[int]):
        """`step` on a ragged chunk: (outputs, per-row output counts, state)."""
        h, held, kept = chunk[:, None], [], []
        for stage, old, count in zip(self.stages, state.held, state.counts, strict=True):
            before = count.tolist()
            h, counts, new, left = stage.step(h, old, before, counts)
            held.append(new)
            kept.append(same_or_new(count, before, left))
        return self._project(h), counts, ConvState(held, kept)

    def flush(self, state: ConvState) -> torch.Tensor:
        """(B, 0, d_model): the held frames never complete a block, and offline drops them too."""
        return self.out.weight.new_zeros(state.held[0].shape[0], 0, self.out.out_features)


# ---- the whole frontend ---------------------------------------------------------------------------
@dataclass
class FrontendState(RowsMixin):
    """The frontend's stream state; every row is its own stream (`select` / `cat` take or join rows)."""

    logmel: LogMelState
    conv: ConvState
    running: torch.Tensor | None = None  # RunningMean's mean (B, n_mels), where the config has one

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor by name, e.g. to check that the state never grows or to save it."""
        out = {"logmel.buffer": self.logmel.buffer}
        out.update({f"conv.held.{i}": t for i, t in enumerate(self.conv.held)})
        if self.running is not None:
            out["running.mean"] = self.running
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


class Frontend(nn.Module):
    """(B, N) 16 kHz audio -> (B, T_out, d_model): LogMel -> FeatureNorm -> [RunningMean] -> ConvSubsampling.
    T_out = F // subsampling with F the complete log-mel frames (see the module docstring). RunningMean is
    there when the config's `running_mean_s` is above 0."""

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        self.cfg = cfg
        self.logmel = LogMel(cfg.sample_rate, cfg.n_mels, cfg.win_samples, cfg.hop_samples)
        self.norm = FeatureNorm(cfg.n_mels)
        frame_rate = cfg.sample_rate / cfg.hop_samples
        self.running = RunningMean(cfg.n_mels, 1.0 / (cfg.running_mean_s * frame_rate)) if cfg.running_mean_s else None
        self.subsample = ConvSubsampling(cfg.n_mels, cfg.d_model, cfg.conv_channels, cfg.subsampling)

    @property
    def frames_per_second(self) -> float:
        return self.cfg.frames_per_second

    def output_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """(B,) sample counts -> (B,) output frame counts."""
        return self.subsample.output_lengths(self.logmel.frame_lengths(sample_lengths))

    def normalise(self, feats: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel frames (B, F, n_mels) -> FeatureNorm, then RunningMean from a fresh stream where there is
        one; `frames` (B,) are the valid counts."""
        feats = self.norm(feats)
        return feats if self.running is None else self.running(feats, frames)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None):
        """audio (B, N) -> (B, T_out, d_model); with lengths (B,) in samples, returns (output, output_lengths)
        with frames past each row's length zeroed."""
        frames = None if lengths is None else self.logmel.frame_lengths(lengths.to(audio.device))
        y = self.subsample(self.normalise(self.logmel(audio), frames))
        if lengths is None:
            return y
        out_lengths = self.output_lengths(lengths.to(audio.device))
        return zero_past(y, out_lengths), out_lengths

    def init_state(self, batch_size: int, device=None, dtype=None) -> FrontendState:
        running, ref = None, self.norm.mean
        if self.running is not None:
            running = self.running.init_state(batch_size, device or ref.device, dtype or ref.dtype)
        return FrontendState(self.logmel.init_state(batch_size, device, dtype),
                             self.subsample.init_state(batch_size, device, dtype), running)

    def step(self, chunk: torch.Tensor, state: FrontendState, counts=None):
        """chunk (B, t) samples, any t >= 0 -> (B, t_out, d_model) final outputs, and the next state; with
        counts (B,) (row b's first counts[b] samples are valid; 0 allowed): (outputs, lengths (B,), state)."""
        return emit(*self.step_rows(chunk, state, as_counts(counts, *chunk.shape)), counts is not None, "step")

    def step_rows(self, chunk: torch.Tensor, state: FrontendState, counts: list[int]):
        """`step` on a ragged chunk: (outputs (B, t_out, d_model), per-row output counts, state)."""
        feats, frames, logmel = self.logmel.step_rows(chunk, state.logmel, counts)
        feats, running = self.norm(feats), state.running
        if self.running is not None:
            feats, running = self.running.run(feats, running, frames)
        y, out_counts, conv = self.subsample.step_rows(feats, state.conv, frames)
        return y, out_counts, FrontendState(logmel, conv, running)

    def flush(self, state: FrontendState, with_lengths: bool = False):
        """Finish the stream as offline does at the end: (B, t_tail, d_model), empty for this frontend (with
        `with_lengths`, also the per-row lengths (B,): zeros)."""
        y, conv = self.subsample.step(self.normalise(self.logmel.flush(state.logmel)), state.conv)
        y = torch.cat([y, self.subsample.flush(conv)], dim=1)
        return (y, torch.zeros(y.shape[0], dtype=torch.int64)) if with_lengths else y
