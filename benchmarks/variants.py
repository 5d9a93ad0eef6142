"""The variants on both tasks (docs/variants.md): accuracy or WER, FLOPs per position, state bytes per
stream and measured speed, plus the seed's overlapping windows (chunked inference with overlap and
stitching) against exact streaming.

    .venv/bin/python benchmarks/variants.py --json docs/variants.json --plot docs/variants.png

Every variant is a bundle exported from its run (docs/variants.md has the commands). For DNA, "plain" is
the shipped dna-demo, whose last phase each variant's run repeats from the same warm-up weights, and
"plain_seed1" that phase again with another seed (the spread between runs). For speech, every row is the
shipped asr-demo fine-tuned by the same short recipe, "plain" included. Accuracy and WER come from the offline
forward pass over the test sets (streaming equals it: tests/core/test_variants.py). Speed is streaming,
on one thread: DNA scored in 16 kbp chunks (best of 3 runs), speech in 160 ms chunks (one run). FLOPs are
counted from the config (SWAConfig.flops_per_position); state bytes are measured on a live stream (learned
spans trimmed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torchmetrics.text import CharErrorRate, WordErrorRate

sys.path.insert(0, str(Path(__file__).parent))
from asr_rtf import chunks_of, long_file, ours_in_process  # noqa: E402
from fasta_throughput import genome, stitched, streamed, timed  # noqa: E402

from swa_stream.pipelines.bundles import default_model_dir, load_asr_model, load_dna_model  # noqa: E402
from swa_stream.tasks.asr.audio import read_audio  # noqa: E402
from swa_stream.tasks.asr.data import read_manifest  # noqa: E402
from swa_stream.tasks.asr.decoder import greedy_decode  # noqa: E402
from swa_stream.tasks.dna.data import load_fasta_split  # noqa: E402

NAMES = ["plain", "plain_seed1", "global", "sinks", "dilation", "multirate", "adaptive", "plain_long", "multirate_long"]


def bundle(task: str, name: str, runs: Path) -> Path:
    return default_model_dir(task) if (task, name) == ("dna", "plain") else runs / f"{task}_{name}" / "bundle"


def trained_variants(task: str, runs: Path, load):
    """(name, bundle folder, model) for every variant whose bundle exists."""
    for name in NAMES:
        path = bundle(task, name, runs)
        if (path / "config.json").is_file():
            yield name, path, load(path)
        else:
            print(f"{task} {name}: no bundle at {path}, skipped", file=sys.stderr)


def state_bytes(encoder, positions: int) -> int:
    """Encoder state of one stream after `positions` inputs (what a live stream holds)."""
    state = encoder.init_state(1)
    with torch.no_grad():
        _, state = encoder.step(torch.zeros(1, positions, encoder.cfg.d_model), state)
    return state.nbytes()


# ---- DNA ---------------------------------------------------------------------------------------------
@torch.no_grad()
def dna_accuracy(model, root: Path, batch: int = 100, stitch: tuple[int, int] | None = None) -> float:
    names, tokens, _ = load_fasta_split(root, "test")
    truth = np.array([model.classes.index(n) for n in names])
    if stitch is not None:  # each record scored by overlapping windows, then stitched
        guesses = [stitched(model, t, *stitch)[0].argmax() for t in tokens]
        return float((np.array(guesses) == truth).mean())
    guesses = []
    for i in range(0, len(tokens), batch):
        rows = tokens[i : i + batch]
        lengths = torch.tensor([len(r) for r in rows])
        x = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for j, r in enumerate(rows):
            x[j, : len(r)] = torch.from_numpy(r.astype(np.int64))
        guesses.append(model(x, lengths)[0].argmax(-1).numpy())
    return float((np.concatenate(guesses) == truth).mean())


def dna_rows(runs: Path, data: Path, long_data: Path, length: int, chunk: int) -> list[dict]:
    sequence = genome(length)
    rows = []
    for name, path, model in trained_variants("dna", runs, load_dna_model):
        seconds = min(timed(streamed, model, sequence, chunk)[0] for _ in range(3))  # best of 3: the machine is noisy
        left, right = model.receptive_field()
        overlap = 2 * max(left, right)  # half of it on each inner side covers the field
        rate = model.cfg.rates[-1]  # windows must start on a pooling group's edge, as the stream's groups do
        overlap += (4096 - overlap) % rate
        head = sequence[:20000]  # stitched and streamed over the same record, so both see the same end
        _, stitched_track = stitched(model, head, 4096, overlap)
        _, exact_head = streamed(model, head, chunk)
        rows.append({
            "variant": name, "bundle": str(path), "accuracy": dna_accuracy(model, data),
            "accuracy_long": dna_accuracy(model, long_data) if long_data.is_dir() else None,
            "flops_per_position": model.cfg.flops_per_position(), "state_bytes": state_bytes(model.encoder, 4096),
            "kbp_per_s": length / seconds / 1e3, "field": [left, right],
            "spans": [b.attn.head_spans() for b in model.encoder.blocks] if model.cfg.adaptive_span else None,
            "stitch_overlap": overlap,
            "stitch_max_diff": float(np.abs(stitched_track - exact_head).max()),
        })
        print(f"dna {name}: {rows[-1]}", file=sys.stderr)
    return rows


def dna_overlap_rows(data: Path, windows: list[tuple[int, int]]) -> list[dict]:
    """The seed's overlapping windows on the plain model: test records scored window by window."""
    model = load_dna_model(default_model_dir("dna"))
    return [{"window": w, "overlap": o, "accuracy": dna_accuracy(model, data, stitch=(w, o))} for w, o in windows]


# ---- speech ------------------------------------------------------------------------------------------
@torch.no_grad()
def asr_log_probs(model, utterances, batch: int = 32, stitch: tuple[int, int, int] | None = None):
    """(log_probs, lengths) per utterance, offline; with stitch = (core, left, right) frames, the encoder
    runs on overlapping windows: each core of `core` frames sees `left` frames before and `right` after."""
    order = sorted(range(len(utterances)), key=lambda i: utterances[i].duration)
    out = [None] * len(utterances)
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        audio = [read_audio(utterances[j].path, model.sample_rate) for j in idx]
        lengths = torch.tensor([len(a) for a in audio])
        x = torch.zeros(len(audio), int(lengths.max()))
        for row, a in enumerate(audio):
            x[row, : len(a)] = a
        if stitch is None:
            log_probs, frames = model(x, lengths)
        else:
            log_probs, frames = stitched_asr(model, x, lengths, *stitch)
        for row, j in enumerate(idx):
            out[j] = log_probs[row : row + 1, : frames[row]]
    return out


def stitched_asr(model, audio, lengths, core: int, left: int, right: int):
    audio, lengths = model.pad_end(audio, lengths)
    fe = model.frontend
    feats, frames = fe.logmel(audio, lengths)
    x, frames = fe.subsample(fe.norm(feats), frames)
    pieces = []
    for start in range(0, x.shape[1], core):
        lo, hi = max(0, start - left), min(x.shape[1], start + core + right)
        window_lengths = (frames - lo).clamp(0, hi - lo)
        h = model.encoder(x[:, lo:hi], window_lengths)
        pieces.append(h[:, start - lo : start - lo + core])
    return model.head(torch.cat(pieces, dim=1)).log_softmax(-1), frames


def wer_of(model, utterances, log_probs) -> tuple[float, float]:
    wer, cer = WordErrorRate(), CharErrorRate()
    hyps = [greedy_decode(lp, torch.tensor([lp.shape[1]]), model.labels)[0] for lp in log_probs]
    refs = [u.text for u in utterances]
    return float(wer(hyps, refs)), float(cer(hyps, refs))


def asr_rows(runs: Path, data: Path, rtf_seconds: float) -> tuple[list[dict], list[dict]]:
    utterances = read_manifest(data / "test.jsonl")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        duration = long_file(data / "test.jsonl", rtf_seconds, wav)
        audio, _ = sf.read(wav, dtype="float32")
    for name, path, model in trained_variants("asr", runs, load_asr_model):
        wer, cer = wer_of(model, utterances, asr_log_probs(model, utterances))
        seconds = ours_in_process(model, chunks_of(audio, int(0.16 * model.sample_rate)))
        rows.append({
            "variant": name, "bundle": str(path), "wer": wer, "cer": cer,
            "flops_per_position": model.encoder.cfg.flops_per_position(),
            "state_bytes": state_bytes(model.encoder, 200), "rtf": seconds / duration,
            "lookahead_ms": model.lookahead_frames * 1000 / model.frame_rate,
            "spans": [b.attn.head_spans() for b in model.encoder.blocks] if model.encoder.cfg.adaptive_span else None,
        })
        print(f"asr {name}: {rows[-1]}", file=sys.stderr)
    plain = load_asr_model(bundle("asr", "plain", runs))
    exact = asr_log_probs(plain, utterances)
    overlap_rows = []
    for left in (16, 64, 128):
        pieces = asr_log_probs(plain, utterances, stitch=(25, left, plain.lookahead_frames))
        wer, cer = wer_of(plain, utterances, pieces)
        diff = max(float((a - b).abs().max()) for a, b in zip(pieces, exact, strict=True))
        overlap_rows.append({"core_frames": 25, "left_frames": left, "right_frames": plain.lookahead_frames,
                             "wer": wer, "cer": cer, "max_log_prob_diff": diff,
                             "encoder_work": (25 + left + plain.lookahead_frames) / 25})
    return rows, overlap_rows


# ---- report ------------------------------------------------------------------------------------------
def tables(results: dict) -> str:
    """The markdown tables of docs/variants.md."""
    out = []
    if results.get("dna"):
        out += ["| DNA variant | test accuracy | at 1,024 bp | FLOPs / bp | state / stream | streaming kbp/s | "
                "field (bp) | overlap-stitch error |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['variant']} | {100 * r['accuracy']:.1f}% | {100 * (r['accuracy_long'] or float('nan')):.1f}% | "
                f"{r['flops_per_position'] / 1e3:.0f} k | "
                f"{r['state_bytes'] / 1024:.1f} KiB | {r['kbp_per_s']:.1f} | {r['field'][0]} + {r['field'][1]} | "
                f"{r['stitch_max_diff']:.1e} |" for r in results["dna"]]
    if results.get("dna_overlap"):
        out += ["", "| dna-demo, overlapping windows | test accuracy |", "|---|---|"]
        out += [f"| window {r['window']} bp, overlap {r['overlap']} bp | {100 * r['accuracy']:.1f}% |"
                for r in results["dna_overlap"]]
    if results.get("asr"):
        out += ["", "| speech variant | test WER | CER | FLOPs / frame | state / stream | RTF (1 thread) | "
                "lookahead |", "|---|---|---|---|---|---|---|"]
        out += [f"| {r['variant']} | {100 * r['wer']:.2f}% | {100 * r['cer']:.2f}% | "
                f"{r['flops_per_position'] / 1e6:.2f} M | {r['state_bytes'] / 1024:.1f} KiB | {r['rtf']:.4f} | "
                f"{r['lookahead_ms']:.0f} ms |" for r in results["asr"]]
    if results.get("asr_overlap"):
        out += ["", "| overlapping windows (cores of 1 s) | test WER | max log-prob diff vs exact | encoder work |",
                "|---|---|---|---|"]
        out += [f"| left context {r['left_frames']} frames ({r['left_frames'] * 40} ms) | {100 * r['wer']:.2f}% | "
                f"{r['max_log_prob_diff']:.1e} | {r['encoder_work']:.2f}x |" for r in results["asr_overlap"]]
    return "\n".join(out)


def plot(results: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    panels = [("dna", "accuracy", "test accuracy (%)", 100), ("dna", "state_bytes", "state per stream (KiB)", 1 / 1024),
              ("dna", "kbp_per_s", "streaming kbp/s (1 thread)", 1), ("asr", "wer", "test WER (%)", 100),
              ("asr", "state_bytes", "state per stream (KiB)", 1 / 1024), ("asr", "rtf", "real-time factor", 1)]
    for ax, (task, key, label, scale) in zip(axes.flat, panels, strict=True):
        rows = results[task]
        ax.bar([r["variant"] for r in rows], [r[key] * scale for r in rows], color="tab:blue" if task == "dna"
               else "tab:orange")
        ax.set_title(f"{'DNA benchmark' if task == 'dna' else 'speech demo'}: {label}", fontsize=10)
        if key == "accuracy":
            ax.set_ylim(95, 100)  # the variants differ by a point or two
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/variants"))
    parser.add_argument("--dna-data", type=Path, default=Path("data/dna_demo"))
    parser.add_argument("--dna-long-data", type=Path, default=Path("data/dna_demo_1024"),
                        help="the same benchmark with 1,024 bp records (docs/dna.md), for length generalisation")
    parser.add_argument("--asr-data", type=Path, default=Path("data/asr_demo"))
    parser.add_argument("--length", type=int, default=200_000, help="bp streamed for the DNA speed")
    parser.add_argument("--rtf-seconds", type=float, default=120.0, help="seconds of speech streamed for the RTF")
    parser.add_argument("--tasks", nargs="+", default=["dna", "asr"], choices=["dna", "asr"])
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    if "dna" in args.tasks:
        results["dna"] = dna_rows(args.runs, args.dna_data, args.dna_long_data, args.length, 1 << 14)
        results["dna_overlap"] = dna_overlap_rows(args.dna_data, [(160, 32), (160, 64), (192, 136)])
    if "asr" in args.tasks:
        results["asr"], results["asr_overlap"] = asr_rows(args.runs, args.asr_data, args.rtf_seconds)
    results["torch"] = torch.__version__
    print(tables(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.plot and "dna" in results and "asr" in results:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
