"""Per-position tracks of whole records: both strands streamed exactly in one batch, and scored against truth.

A strand-symmetric track ("inside a gene on either strand") is the mean of the forward sequence's
probabilities and those of its reverse complement mapped back to forward coordinates. The two strands
are the two rows of one stream, so each chunk costs one step (`tasks/dna/model.py` `stream_strands`, which
score-fasta --rc-average streams with too).
"""

from __future__ import annotations

import numpy as np
import torch

from swa_stream.tasks.dna.model import stream_strands
from swa_stream.tasks.dna.tokenizer import N_TOKEN


def mask_n(track: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """A float32 copy of `track` with N positions NaN: they carry no information, and bedGraph and bigWig
    skip them."""
    track = np.array(track, dtype=np.float32)
    track[tokens == N_TOKEN] = np.nan
    return track


def stream_both_strands(model, tokens: np.ndarray, chunk: int = 65536, track: int = 0, on_chunk=None) -> np.ndarray:
    """uint8 tokens (T,) -> float32 (T,): the mean over both strands of track `track`'s probability,
    streamed through `model.step`/`flush` in chunks of `chunk` bases (`tasks/dna/model.py` `stream_strands`).
    `on_chunk(n)` hears of each n bases fed."""
    strands = np.empty((2, len(tokens)), dtype=np.float32)

    def keep(start: int, probs: np.ndarray, strand: int) -> None:
        strands[0 if strand == 1 else 1, start : start + len(probs)] = probs[:, track]

    stream_strands(model, tokens, chunk, keep, on_chunk)
    return (strands[0] + strands[1][::-1]) / 2


def per_position_scores(prob: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """Accuracy at 0.5, F1, recall, precision and AUROC of `prob` against 0/1 `truth`, over the `valid`
    positions (all when None). A 0/1 score (a gene finder's calls) gets an AUROC too: its ties count half, so it
    is the mean of its sensitivity and specificity, what its calls give as a ranking."""
    from torchmetrics.functional.classification import binary_auroc

    if valid is not None:
        prob, truth = prob[valid], truth[valid]
    y = truth.astype(bool)
    pred = prob > 0.5
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    out = {"accuracy": float((pred == y).mean()) if len(y) else float("nan"),
           "f1": 2 * tp / max(1, 2 * tp + fp + fn), "recall": tp / max(1, tp + fn), "precision": tp / max(1, tp + fp)}
    if len(np.unique(prob)) > 1:
        out["auroc"] = float(binary_auroc(torch.from_numpy(prob.astype(np.float32)), torch.from_numpy(y).long()))
    return out


def runs(prob: np.ndarray, threshold: float = 0.5, min_length: int = 1) -> list[tuple[int, int]]:
    """Half-open (start, end) runs where prob > threshold, at least `min_length` long."""
    above = np.concatenate([[False], prob > threshold, [False]])
    edges = np.flatnonzero(above[1:] != above[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= min_length]
