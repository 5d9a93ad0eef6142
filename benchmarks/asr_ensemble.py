"""Posterior averaging of streaming ASR bundles, scored on the validation sets as `benchmarks/asr_real.py`
scores one bundle (a model-selection experiment; nothing in the package averages models).

Every member streams the same chunks in lockstep (same frontend, frame rate and lookahead), and the decoder
reads log(mean of the members' probabilities) per frame, so the result still streams exactly. Members are
joined with "+":

    .venv/bin/python benchmarks/asr_ensemble.py --split val --no-whisper --espeak-limit 300 \\
        --model runs/asr_real_phase4_bundle+runs/p6_best --json runs/val_ens_p4_p6.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import swa_stream.pipelines.bundles as bundles

sys.path.insert(0, str(Path(__file__).resolve().parent))
import asr_real  # noqa: E402

_load = bundles.load_asr_model


class Ensemble(torch.nn.Module):
    """The streaming interface `transcribe_chunks` uses (init_state, step, flush), over several models."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        first = members[0]
        if any((m.sample_rate, m.frame_rate, m.lookahead_frames, m.labels) !=
               (first.sample_rate, first.frame_rate, first.lookahead_frames, first.labels) for m in members):
            raise SystemExit("ensemble members must share sample rate, frame rate, lookahead and labels")
        self.labels, self.lexicon = first.labels, first.lexicon
        self.sample_rate, self.frame_rate = first.sample_rate, first.frame_rate

    @staticmethod
    def _mix(log_probs):
        return torch.stack(log_probs).exp().mean(0).clamp_min(1e-30).log()

    def init_state(self, batch_size: int = 1):
        return [m.init_state(batch_size) for m in self.members]

    def step(self, chunk, states):
        outs, states = zip(*[m.step(chunk, s) for m, s in zip(self.members, states, strict=True)], strict=True)
        return self._mix(list(outs)), list(states)

    def flush(self, states):
        return self._mix([m.flush(s) for m, s in zip(self.members, states, strict=True)])


def load(directory):
    parts = str(directory).split("+")
    return Ensemble([_load(p) for p in parts]) if len(parts) > 1 else _load(directory)


if __name__ == "__main__":
    bundles.load_asr_model = load
    asr_real.cli_rtf = lambda *args: {"rtf": float("nan")}  # one process per bundle: no command for "A+B"
    sys.argv[0] = "asr_real.py"
    asr_real.main()
