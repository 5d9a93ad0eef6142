"""Greedy CTC decoding, offline for batches and as a stream with word timestamps and endpointing.

The streaming decoder reads one frame at a time, so everything it decides (characters, word times, where a
segment ends) depends only on the frame sequence, never on how the frames were chunked: a transcript is
identical for any chunking because the model's frames are.

Endpointing follows sherpa-onnx's three rules, checked after every frame. "Silence" is the run of trailing
frames whose best label is the blank; a segment's length counts from its first frame.
  rule 1  no speech decoded yet and trailing silence >= `silence_no_speech` s (default 2.4): start over,
          emitting nothing;
  rule 2  speech decoded and trailing silence >= `silence_after_speech` s (default 1.2): the segment is final;
  rule 3  the segment reached `max_segment` s (default 20): final (or start over without speech).
A word starts at its first character's frame and ends one frame after its last character's frame; times are
seconds from the start of the stream (frame / frame_rate).

A word's confidence is the mean, over its characters, of the character's highest probability across the
frames of its CTC run (CTC puts a character's mass on one or two spiky frames). Words under
`min_confidence`, and garbage words (`*`, the label of non-task speech), are dropped from the output: they
neither print nor count as speech for endpointing.

A closed vocabulary (`lexicon`, from the bundle: the digit demo's eleven words) mends misspellings. A CTC model
over characters can spell what it hears as no word at all ("fovre", "tewo"). When a word ends and its
greedy spelling is not in the lexicon, the decoder scores every lexicon word, and the garbage word, by its
full CTC probability (the sum over all alignments, `torch.nn.functional.ctc_loss`) on the frames from
`LEXICON_PAD` frames before the word's first character to `LEXICON_PAD` frames after its last, never reaching
into a neighbouring word or a space, and keeps the best; garbage, and a word too short to spell any
candidate, are dropped. Words the lexicon has are kept as the greedy path spelled them (on validation,
rescoring those too gained nothing).
A snapped word keeps the confidence of what was heard, the greedy spelling's (on validation, scaling it by
the chosen word's share of the candidates' probability dropped more right words than wrong ones). Rescoring
reads only frames that have arrived, so transcripts stay independent of chunking.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from swa_stream.config import in_range
from swa_stream.tasks.asr.text import GARBAGE, check_lexicon, ctc_collapse, decode, encode

MIN_CONFIDENCE = 0.6  # chosen on validation data (FSDD val strings, espeak-ng val voices): see docs/asr.md
LEXICON_PAD = 3  # frames of context on each side of a word that the lexicon rescores (120 ms at 25 frames/s)
LEXICON_MAX_FRAMES = 500  # the most frames a word's rescoring reads (its last 20 s at 25 frames/s)


@dataclass
class Word:
    word: str
    start: float
    end: float
    # Not part of equality: streamed and offline log-probs agree to ~1e-7, so confidences differ in the last
    # digits while the words and times are identical.
    conf: float = field(default=1.0, compare=False)


@dataclass
class Segment:
    """A final result: its text, its span in seconds and its words."""

    text: str
    start: float
    end: float
    words: list[Word]

    def to_dict(self) -> dict:
        return {"type": "final", "text": self.text, "start": round(self.start, 3), "end": round(self.end, 3),
                "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                           "conf": round(w.conf, 3)} for w in self.words]}


@dataclass
class EndpointConfig:
    """Thresholds of the three endpoint rules, in seconds (see the module docstring). None disables a rule."""

    silence_no_speech: float | None = 2.4
    silence_after_speech: float | None = 1.2
    max_segment: float | None = 20.0

    def __post_init__(self):  # NaN would compare False and silently switch a rule off
        for name in ("silence_no_speech", "silence_after_speech", "max_segment"):
            in_range(f"endpoint.{name}", getattr(self, name), 0.0, above=True, none_ok=True)


@dataclass
class DecoderState:
    frame: int = 0  # frames consumed
    last: int = 0  # best label of the previous frame (0 = blank), for CTC's repeat merging
    silence: int = 0  # trailing frames whose best label is the blank
    segment_start: int = 0  # first frame of the current segment
    words: list[tuple[str, int, int, float]] = field(default_factory=list)  # finished: (word, first, last, conf)
    chars: str = ""  # the word being spelled
    probs: tuple[float, ...] = ()  # its characters' probabilities (each the best frame of the char's run)
    word_first: int = -1  # frame of its first character
    word_last: int = -1  # frame of its last character so far
    # lexicon decoding only: log-prob rows of frames recent_first.. (the current word and its left context),
    # and the first frame after the last label that belongs to no current word (a space, an earlier word)
    recent: tuple[torch.Tensor, ...] = ()
    recent_first: int = 0
    boundary: int = 0


class CTCDecoder:
    """Streaming greedy CTC: `step(log_probs (T, V), state) -> (final segments, state)`, `flush(state)`."""

    def __init__(self, labels: list[str], frame_rate: float, endpoint: EndpointConfig | None = None,
                 min_confidence: float = MIN_CONFIDENCE, lexicon: list[str] | None = None):
        self.labels, self.frame_rate = list(labels), float(frame_rate)
        self.space = self.labels.index(" ")
        self.endpoint = endpoint or EndpointConfig(None, None, None)
        self.min_confidence = float(in_range("min_confidence", min_confidence, 0.0, 1.0))
        self.lexicon = None if lexicon is None else check_lexicon(lexicon, self.labels)
        if self.lexicon is not None:  # the candidates' spellings, concatenated as ctc_loss takes them
            self._candidates = self.lexicon + ([GARBAGE] if GARBAGE in self.labels else [])
            spelled = [encode(w, self.labels) for w in self._candidates]
            self._targets = torch.tensor([i for ids in spelled for i in ids])
            self._target_lengths = torch.tensor([len(ids) for ids in spelled])

    @classmethod
    def for_model(cls, model, endpoint: EndpointConfig | None = None, open_vocabulary: bool = False) -> CTCDecoder:
        """The decoder a model bundle asks for: its labels, frame rate and lexicon (unless `open_vocabulary`)."""
        lexicon = None if open_vocabulary else getattr(model, "lexicon", None)
        return cls(model.labels, model.frame_rate, endpoint, lexicon=lexicon)

    def init_state(self) -> DecoderState:
        return DecoderState()

    def partial(self, state: DecoderState) -> str:
        """The current segment's text so far, including a word still being spelled."""
        return " ".join([w[0] for w in state.words] + ([state.chars] if state.chars else []))

    def step(self, log_probs: torch.Tensor, state: DecoderState) -> tuple[list[Segment], DecoderState]:
        """log_probs (T, V) (or (1, T, V)) of consecutive frames -> segments that became final, next state."""
        if log_probs.dim() == 3:
            log_probs = log_probs[0]
        top = log_probs.max(-1)
        best, probs = top.indices.tolist(), top.values.float().exp().tolist()
        state = replace(state, words=list(state.words))
        # copies: the state must not share memory with (and keep alive) the caller's tensor
        rows = log_probs.float().clone().unbind(0) if self.lexicon is not None else None
        finals = []
        for t, (label, prob) in enumerate(zip(best, probs, strict=True)):
            if rows is not None:
                self._remember(rows[t], label, state)
            self._read(label, prob, state)
            segment = self._check_endpoint(state)
            if segment is not None:
                finals.append(segment)
        return [s for s in finals if s.words], state

    def flush(self, state: DecoderState) -> list[Segment]:
        state = replace(state, words=list(state.words))
        self._end_word(state)
        segment = self._segment(state)
        return [segment] if segment.words else []

    # ---- one frame at a time ----------------------------------------------------------------------
    def _read(self, label: int, prob: float, st: DecoderState) -> None:
        f = st.frame
        if label != 0 and label != st.last:
            if label == self.space:
                self._end_word(st)  # st.frame is still this space's frame: the word's frames end before it
            else:
                if not st.chars:
                    st.word_first = f
                st.chars += self.labels[label]
                st.probs += (prob,)
                st.word_last = f
        elif label != 0 and label != self.space and st.chars:  # the same character's run goes on
            st.probs = st.probs[:-1] + (max(st.probs[-1], prob),)
        if label == self.space:  # every frame of a space run: the next word's frames start after it
            st.boundary = f + 1
        st.silence = st.silence + 1 if label == 0 else 0
        st.last, st.frame = label, f + 1

    def _remember(self, row: torch.Tensor, label: int, st: DecoderState) -> None:
        """Keeps frame st.frame's log-probs while a word may still need them (lexicon decoding). `recent`
        always holds frames recent_first .. st.frame - 1, one row each."""
        if not st.chars and not (label != 0 and label != self.space):  # no word open and none starting
            keep = max(st.boundary, st.frame + 1 - LEXICON_PAD)  # the left context a word starting next may use
            drop = max(0, keep - st.recent_first)
            st.recent, st.recent_first = st.recent[drop:], st.recent_first + drop
        st.recent += (row,)
        if len(st.recent) > LEXICON_MAX_FRAMES:  # a word left open for minutes (no endpointing): bounded
            drop = len(st.recent) - LEXICON_MAX_FRAMES
            st.recent, st.recent_first = st.recent[drop:], st.recent_first + drop

    def _end_word(self, st: DecoderState) -> None:
        if st.chars and GARBAGE not in st.chars:
            conf = sum(st.probs) / len(st.probs)
            word = st.chars
            if self.lexicon is not None and word not in self.lexicon:
                word = self._snap(st)
            if word is not None and conf >= self.min_confidence:
                st.words.append((word, st.word_first, st.word_last, conf))
        if self.lexicon is not None and st.chars:
            st.boundary = max(st.boundary, st.word_last + 1)
            keep = st.boundary - st.recent_first
            if keep > 0:
                st.recent, st.recent_first = st.recent[keep:], st.recent_first + keep
        st.chars, st.word_first, st.word_last, st.probs = "", -1, -1, ()

    def _snap(self, st: DecoderState) -> str | None:
        """The best lexicon word for the word being ended, by CTC probability on its frames; None for the
        garbage word."""
        lo = max(st.boundary, st.word_first - LEXICON_PAD, st.recent_first)
        hi = min(st.word_last + LEXICON_PAD, st.frame - 1)  # `recent` reaches st.frame - 1 at least
        frames = torch.stack(st.recent[lo - st.recent_first : hi - st.recent_first + 1])  # (T, V)
        n = len(self._candidates)
        loss = F.ctc_loss(frames.unsqueeze(1).expand(-1, n, -1), self._targets, torch.full((n,), frames.shape[0]),
                          self._target_lengths, reduction="none", zero_infinity=False)
        if not torch.isfinite(loss).any():  # too few frames to spell any candidate: nothing it could be
            return None
        word = self._candidates[int(loss.argmin())]
        return None if word == GARBAGE else word

    def _check_endpoint(self, st: DecoderState) -> Segment | None:
        rules, fps = self.endpoint, self.frame_rate
        silence, length = st.silence / fps, (st.frame - st.segment_start) / fps
        speech = bool(st.words or st.chars)
        hit = (
            (not speech and rules.silence_no_speech is not None and silence >= rules.silence_no_speech)
            or (speech and rules.silence_after_speech is not None and silence >= rules.silence_after_speech)
            or (rules.max_segment is not None and length >= rules.max_segment)
        )
        if not hit:
            return None
        self._end_word(st)
        segment = self._segment(st)
        st.words, st.segment_start, st.silence = [], st.frame, 0
        return segment

    def _segment(self, st: DecoderState) -> Segment:
        fps = self.frame_rate
        words = [Word(w, first / fps, (last + 1) / fps, conf) for w, first, last, conf in st.words]
        if not words:
            return Segment("", st.segment_start / fps, st.frame / fps, [])
        return Segment(" ".join(w.word for w in words), words[0].start, words[-1].end, words)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, labels: list[str]) -> list[str]:
    """Offline batch decoding: log_probs (B, T, V), lengths (B,) -> one normalised string per row, garbage
    words dropped (no confidence threshold: this is the training metric's decoder)."""
    best = log_probs.argmax(-1).cpu()
    texts = []
    for row, n in zip(best, lengths.tolist(), strict=True):
        words = decode(ctc_collapse(row[:n].tolist()), labels).split()
        texts.append(" ".join(w for w in words if GARBAGE not in w))
    return texts
