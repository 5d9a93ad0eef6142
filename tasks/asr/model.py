"""The speech model: Frontend (log-mel -> fixed norm -> causal 4x subsampling) -> SWAEncoder -> Linear CTC head.

`forward(audio, lengths)` is the reference; `init_state` / `step` / `flush` stream the same log-probabilities
for any chunking. The end of a stream is defined once, here: `end_padding` zero samples are appended to every
utterance, offline and streamed (and in training), because the frontend drops an incomplete final 25 ms
window and an incomplete 4-frame block; padding W + S*H samples completes every block that holds real audio,
and `end_silence_ms` more gives a causal model room to emit its last characters. Lookahead is set by the
encoder's windows (`SWAConfig.lookahead`); `flush` answers the held-back frames. No Lightning here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from swa_stream.config import SWAConfig
from swa_stream.encoder import SWAEncoder
from swa_stream.errors import ConfigError, SWAStreamError
from swa_stream.lengths import zero_past
from swa_stream.ragged import RowsMixin, as_counts, emit, ragged_cat
from swa_stream.state import StreamState
from swa_stream.tasks.asr.frontend import Frontend, FrontendConfig, FrontendState
from swa_stream.tasks.asr.text import check_labels, check_lexicon

# (normalised log-mel (B, F, n_mels), frame lengths (B,)) -> augmented features; training only
FeatureAugment = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ASRState(RowsMixin):
    """A batch of speech streams, one per row: `state.select(rows)` keeps some (a stream left),
    `ASRState.cat([state, model.init_state(1)])` adds one (a stream joined), between steps."""

    _ragged_fields = ("bypass",)
    frontend: FrontendState
    encoder: StreamState


class ASRModel(nn.Module):
    """audio (B, N) at `frontend.sample_rate` -> CTC log-probabilities (B, T, len(labels)), T at 25 frames/s."""

    def __init__(self, frontend: FrontendConfig, encoder: SWAConfig, labels: list[str], end_silence_ms: float = 100.0,
                 lexicon: list[str] | None = None):
        super().__init__()
        if frontend.d_model != encoder.d_model:
            raise ConfigError(
                f"frontend.d_model: {frontend.d_model} must equal encoder.d_model ({encoder.d_model}); set both"
            )
        if end_silence_ms < 0:
            raise ConfigError(f"end_silence_ms: must be >= 0, got {end_silence_ms!r}")
        self.labels = check_labels(labels)
        # the closed vocabulary the decoder snaps misspelt words to (tasks/asr/decoder.py); None: open
        self.lexicon = None if lexicon is None else check_lexicon(lexicon, self.labels)
        self.end_silence_ms = float(end_silence_ms)
        self.frontend = Frontend(frontend)
        spectrogram = self.frontend.logmel.mel.spectrogram
        # torchaudio's periodic Hann window is a view into a tensor one sample longer; safetensors refuses
        # to save views, so the buffer gets storage of its own (same values).
        spectrogram.window = spectrogram.window.clone()
        self.encoder = SWAEncoder(encoder)
        self.head = nn.Linear(encoder.d_model, len(self.labels))

    @property
    def sample_rate(self) -> int:
        return self.frontend.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        """Output frames per second (25 for 10 ms hops and 4x subsampling)."""
        return self.frontend.frames_per_second

    @property
    def lookahead_frames(self) -> int:
        return self.encoder.cfg.lookahead

    @property
    def end_padding(self) -> int:
        """Zero samples appended to every utterance and stream: see the module docstring."""
        cfg = self.frontend.cfg
        return cfg.win_samples + cfg.subsampling * cfg.hop_samples + round(self.end_silence_ms * cfg.sample_rate / 1000)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) sample counts (before end padding) -> (B,) output frames."""
        return self.frontend.output_lengths(lengths + self.end_padding)

    def pad_end(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero everything past each row's length, then append `end_padding` zeros to every row."""
        return F.pad(zero_past(audio, lengths), (0, self.end_padding)), lengths + self.end_padding

    def forward(
        self, audio: torch.Tensor, lengths: torch.Tensor | None = None, augment: FeatureAugment | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, N), lengths (B,) samples (default: all N) -> (log_probs (B, T, V), out_lengths (B,)).
        Frames past a row's length hold the log-probabilities of zeros; `augment` edits features (training)."""
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long, device=audio.device)
        audio, lengths = self.pad_end(audio, lengths.to(audio.device))
        fe = self.frontend
        feats, frames = fe.logmel(audio, lengths)
        feats = fe.normalise(feats, frames)
        if augment is not None:
            feats = augment(feats, frames)
        x, out_lengths = fe.subsample(feats, frames)
        h = self.encoder(x, out_lengths)
        return self.head(h).log_softmax(-1), out_lengths

    # ---- streaming -----------------------------------------------------------------------------
    def init_state(self, batch_size: int = 1) -> ASRState:
        return ASRState(self.frontend.init_state(batch_size), self.encoder.init_state(batch_size))

    def step(self, chunk: torch.Tensor, state: ASRState, counts=None):
        """Feed each stream its next samples; return the log-probabilities of the frames that became final.

        step(chunk (B, t), state) -> (log_probs (B, t', V), state): every row takes all t samples (any t >= 0)
        and, since every row must then emit the same count, the rows must be at the same point of their
        streams (else an SWAStreamError asks for counts).
        step(chunk (B, t), state, counts (B,) ints) -> (log_probs (B, t', V), frames (B,) int64, state): row b
        takes its first counts[b] samples (0 allowed; the rest of the row is ignored), and its first frames[b]
        rows of log_probs are its new frames (the rest are zeros). This is the server's batched call.
        """
        counted = as_counts(counts, *chunk.shape)
        x, frames, fe_state = self.frontend.step_rows(chunk, state.frontend, counted)
        h, frames, enc_state = self.encoder.step(x, state.encoder, counts=frames)
        return emit(self.head(h).log_softmax(-1), frames.tolist(), ASRState(fe_state, enc_state), counts is not None)

    def flush(self, state: ASRState, with_lengths: bool = False):
        """End of stream: the log-probs (B, t', V) of the end padding and of the frames held for lookahead.
        With `with_lengths`: (log_probs, frames (B,) int64), which rows at different points of their streams
        need (row b's first frames[b] rows are its tail)."""
        ref = state.frontend.logmel.buffer
        batch = ref.shape[0]
        zeros = ref.new_zeros(batch, self.end_padding)
        x, frames, fe_state = self.frontend.step_rows(zeros, state.frontend, [self.end_padding] * batch)
        h, frames, enc_state = self.encoder.step(x, state.encoder, counts=frames)
        tail, tail_frames = self.encoder.flush(enc_state, with_lengths=True)
        h = ragged_cat(h, frames.tolist(), tail)
        log_probs, frames = self.head(h).log_softmax(-1), (frames + tail_frames).tolist()
        log_probs, lengths, _ = emit(log_probs[:, : max(frames, default=0)], frames, None, True)
        if with_lengths:
            return log_probs, lengths
        if len(set(frames)) > 1:
            raise SWAStreamError("flush: the rows are at different points of their streams; pass with_lengths=True")
        return log_probs

    def config(self) -> dict:
        """What a bundle's config.json holds to rebuild this model (the task's schema defines it)."""
        from swa_stream.tasks.asr.schema import ASRSchema

        return ASRSchema().model_config(self)

    @classmethod
    def from_config(cls, config: dict) -> ASRModel:
        """The model a bundle config describes, checked field by field (see the task's schema)."""
        from swa_stream.tasks.asr.schema import ASRSchema

        return ASRSchema().build(config)
