"""Why asr-demo hears yweweler's "six" as "eight": spectrograms of FSDD validation clips side by side.

    .venv/bin/python benchmarks/fsdd_six_eight.py --out docs/fsdd_six_eight.png

Top row: yweweler's "six" (two clips) and "eight"; bottom row: "six" by theo (held out too), george and
nicolas (training speakers). Theo's and george's sixes carry the frication of /s/ (broadband noise up the
4 kHz band) before and after the vowel; yweweler's start at the vowel and end at the /k/ burst, so they look
like his "eight". Nicolas's are trimmed nearly as tight, and the model knows them: he is a training
speaker. The clips are FSDD's own (trimmed by its authors), recordings 0-24, at their 8 kHz.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import soundfile as sf

CLIPS = ("6_yweweler_0", "6_yweweler_3", "8_yweweler_0", "6_theo_0", "6_george_0", "6_nicolas_0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fsdd", type=Path, default=Path("../shared/data/speech/fsdd/recordings"))
    ap.add_argument("--out", type=Path, default=Path("docs/fsdd_six_eight.png"))
    args = ap.parse_args()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 5.5))
    for ax, name in zip(axes.flat, CLIPS, strict=True):
        audio, rate = sf.read(args.fsdd / f"{name}.wav", dtype="float32")
        ax.specgram(audio, NFFT=256, Fs=rate, noverlap=192, cmap="magma")
        digit, speaker, n = name.split("_")
        level = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-12)
        ax.set_title(f'"{["six", "eight"][digit == "8"]}", {speaker} #{n}: {len(audio) / rate:.2f} s, '
                     f"{level:.0f} dBFS", fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        ax.set_ylabel("Hz", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("FSDD: yweweler's sixes lack the /s/ that other speakers' sixes have", fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
