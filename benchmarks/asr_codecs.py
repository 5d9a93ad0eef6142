"""asr-demo on the same clips stored as WAV, MP3 and Ogg Vorbis: what a lossy file, as users have them, costs.

    .venv/bin/python benchmarks/asr_codecs.py --data data/asr_real --json docs/asr_codecs.json

Each clip of the manifest (default: FSDD's validation strings, theo and yweweler recordings 0-24, so no
test clip is touched) is resampled to the codec's rate (scipy's polyphase filter) and written by libsndfile
(soundfile) as MP3 at 44.1 kHz and at 16 kHz, and Ogg Vorbis at 44.1 kHz, at libsndfile's default quality;
"wav" is the clip as it is (8 kHz PCM). Every file is then transcribed as `swa-stream transcribe` does with
its default options (benchmarks/asr_real.py `ours`: 160 ms chunks, in process) and scored as digit words.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import soundfile as sf
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).parent))
from asr_real import manifest, ours, score, transcribe_all  # noqa: E402

CODECS = {"wav": (None, None), "mp3 44.1 kHz": ("MP3", 44100), "mp3 16 kHz": ("MP3", 16000),
          "ogg vorbis 44.1 kHz": ("OGG", 44100)}


def encode(rows: list[dict], folder: Path, fmt: str | None, rate: int | None) -> list[dict]:
    if fmt is None:
        return rows
    out = []
    for i, r in enumerate(rows):
        audio, sr = sf.read(r["path"], dtype="float64")
        path = folder / f"{i:05d}.{fmt.lower()}"
        sf.write(path, resample_poly(audio, rate, sr) if rate != sr else audio, rate, format=fmt)
        out.append({**r, "path": str(path)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/asr_real")
    ap.add_argument("--manifest", default="fsdd_val_strings.jsonl", help="a manifest in --data")
    ap.add_argument("--model", default="pipelines/models/asr-demo")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = manifest(Path(args.data) / args.manifest)
    run, params = ours(args.model)
    results = {"model": args.model, "manifest": args.manifest, "clips": len(rows),
               "libsndfile": sf.__libsndfile_version__, "codecs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fmt, rate) in CODECS.items():
            folder = Path(tmp) / name.replace(" ", "_")
            folder.mkdir()
            coded = encode(rows, folder, fmt, rate)
            hyps, _ = transcribe_all(run, coded, None, name)
            results["codecs"][name] = score(coded, hyps)
    print("| file | WER | " + " | ".join(k for k in results["codecs"]["wav"] if k != "all") + " |")
    for name, res in results["codecs"].items():
        per = " | ".join(f"{v['wer']:.1%}" for k, v in res.items() if k != "all")
        print(f"| {name} | {res['all']['wer']:.1%} | {per} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
