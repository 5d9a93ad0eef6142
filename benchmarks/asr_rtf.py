"""Real-time factor of streaming speech recognition on CPU: swa-stream against torchaudio's Emformer.

    .venv/bin/python benchmarks/asr_rtf.py --json docs/asr_rtf.json

All figures come from one long file (by default 4 minutes of the demo test set, joined with short pauses):

1. `swa-stream transcribe FILE --chunk-ms 160` in a fresh process: wall clock from process start to exit,
   divided by the audio's duration. This is the figure the issue's RTF <= 0.05 target is about.
2. In process, our model's `step()` on 160 ms chunks: frontend, SWA encoder and CTC head.
3. In process, the same frontend and head around a torchaudio `Emformer` of the same width, depth, heads,
   feed-forward size and context (segment = one chunk, left context = our widest left window, right
   context = our total lookahead), fed the same chunks through `Emformer.infer`.
4. In process, a ragged batch of `--streams` streams (default 32) stepped together, as the server runs
   them: each stream starts at its own point of the file, joins the batch at its own step and gets a
   chunk of its own length (full, partial or empty); the figure is the step time per stream.

Each in-process figure is the fastest of `--repeats` runs, both as wall time and as this thread's CPU time
(`time.thread_time`), which a shared machine's other jobs disturb less. Without the demo test set
(`--manifest`), the file is low-level noise: the step's speed does not depend on what the audio says.

The Emformer is randomly initialised: its speed does not depend on its weights. Both in-process runs use
the same number of torch threads (default 1, as `transcribe` does).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torchaudio.models import Emformer

from swa_stream.kernels import cpu_step
from swa_stream.pipelines.bundles import default_model_dir, load_asr_model
from swa_stream.tasks.asr.audio import read_audio
from swa_stream.tasks.asr.model import ASRModel


def long_file(manifest: Path, seconds: float, out: Path, pause: float = 0.4, rate: int = 16000) -> float:
    """Join the manifest's utterances (with `pause` s of silence between) until `seconds`; write a wav."""
    parts, total = [], 0.0
    gap = np.zeros(int(pause * rate), dtype=np.float32)
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{manifest}: no utterances")
    i = 0
    while total < seconds:
        entry = lines[i % len(lines)]
        audio = read_audio(manifest.parent / entry["audio_filepath"], rate).numpy()
        parts += [audio, gap]
        total += (len(audio) + len(gap)) / rate
        i += 1
    sf.write(out, np.concatenate(parts), rate, subtype="PCM_16")
    return total


def cli_rtf(audio: Path, model_dir: Path, chunk_ms: float, duration: float) -> dict:
    exe = Path(sys.executable).with_name("swa-stream")
    command = [str(exe), "transcribe", str(audio), "--model", str(model_dir), "--chunk-ms", str(chunk_ms)]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"transcribe failed: {done.stderr.strip()}")
    return {"command": " ".join(command[1:]), "wall_s": wall, "rtf": wall / duration,
            "segments": len(done.stdout.splitlines())}


def noise_file(seconds: float, out: Path, rate: int = 16000) -> float:
    audio = (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 0.05).astype(np.float32)
    sf.write(out, audio, rate, subtype="PCM_16")
    return len(audio) / rate


def timed(run) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of run()."""
    w, c = time.perf_counter(), time.thread_time()
    run()
    return time.perf_counter() - w, time.thread_time() - c


def chunks_of(audio: np.ndarray, size: int) -> list[torch.Tensor]:
    return [torch.from_numpy(audio[i : i + size])[None] for i in range(0, len(audio), size)]


@torch.inference_mode()
def ours_in_process(model: ASRModel, chunks: list[torch.Tensor]) -> tuple[float, float]:
    def run():
        state = model.init_state(1)
        for chunk in chunks:
            _, state = model.step(chunk, state)
        model.flush(state)

    return timed(run)


@torch.inference_mode()
def ragged_in_process(model: ASRModel, audio: np.ndarray, chunk: int, streams: int, steps: int) -> dict:
    """`streams` streams at different points of their own audio in one batch: stream s starts at its own
    offset, joins at step s % 8, and each step brings a full chunk, half a chunk or nothing (by turns)."""
    rng = np.random.default_rng(1)
    offsets = rng.integers(0, max(1, len(audio) - chunk * steps), size=streams)
    joins = [s % 8 for s in range(streams)]
    batch = torch.from_numpy(np.stack([audio[o : o + chunk * steps] for o in offsets]))
    from swa_stream.tasks.asr.model import ASRState

    def run():
        state, active, pos = None, [], [0] * streams
        for k in range(steps + 8):
            fresh = [s for s in range(streams) if joins[s] == k]
            if fresh:
                new = model.init_state(len(fresh))
                state = new if state is None else ASRState.cat([state, new])
                active += fresh
            counts = [(chunk, chunk // 2, 0)[(s + k) % 3] for s in active]
            counts = [min(c, batch.shape[1] - pos[s]) for c, s in zip(counts, active, strict=True)]
            parts = [batch[s, pos[s] : pos[s] + c] for c, s in zip(counts, active, strict=True)]
            rows = torch.stack([F.pad(p, (0, chunk - p.shape[0])) for p in parts])  # zero padding
            _, _, state = model.step(rows, state, counts=counts)
            for c, s in zip(counts, active, strict=True):
                pos[s] += c

    wall, cpu = timed(run)
    step_calls = steps + 8
    return {"streams": streams, "steps": step_calls, "wall_s": wall, "cpu_s": cpu,
            "ms_per_step_per_stream": 1000 * cpu / step_calls / streams}


def matched_emformer(model: ASRModel, chunk_frames: int) -> Emformer:
    cfg = model.encoder.cfg
    return Emformer(
        input_dim=cfg.d_model, num_heads=cfg.n_heads, ffn_dim=cfg.d_ff, num_layers=cfg.n_layers,
        segment_length=chunk_frames, left_context_length=max(left for left, _ in cfg.windows),
        right_context_length=cfg.lookahead, activation="gelu",
    ).eval()


@torch.inference_mode()
def emformer_in_process(model: ASRModel, emformer: Emformer, chunks: list[torch.Tensor]) -> tuple[float, float]:
    """Our frontend and head around the Emformer; frames wait until a segment plus right context is there."""
    need = emformer.segment_length + emformer.right_context_length
    one = torch.tensor([need])

    def run():
        fe_state, em_state = model.frontend.init_state(1), None
        buffer = torch.zeros(1, 0, model.encoder.cfg.d_model)
        for chunk in chunks:
            x, fe_state = model.frontend.step(chunk, fe_state)
            buffer = torch.cat([buffer, x], dim=1)
            while buffer.shape[1] >= need:
                out, _, em_state = emformer.infer(buffer[:, :need], one, em_state)
                model.head(out).log_softmax(-1)
                buffer = buffer[:, emformer.segment_length :]

    return timed(run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="ASR bundle (default: the bundled asr-demo)")
    p.add_argument("--audio", type=Path, default=None, help="a long recording (default: built from --manifest)")
    p.add_argument("--manifest", type=Path, default=Path("data/asr_demo/test.jsonl"))
    p.add_argument("--seconds", type=float, default=240.0, help="length of the file built from --manifest")
    p.add_argument("--chunk-ms", type=float, default=160.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="in-process runs; the fastest counts")
    p.add_argument("--streams", type=int, default=32, help="streams in the ragged batch")
    p.add_argument("--ragged-steps", type=int, default=200, help="steps of the ragged batch")
    p.add_argument("--no-cli", action="store_true", help="skip the fresh-process `transcribe` run")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = args.model or default_model_dir("asr")
    model = load_asr_model(model_dir)

    with tempfile.TemporaryDirectory() as tmp:
        audio_path = args.audio
        if audio_path is None:
            audio_path = Path(tmp) / "long.wav"
            if args.manifest.exists():
                long_file(args.manifest, args.seconds, audio_path, rate=model.sample_rate)
            else:
                print(f"{args.manifest} not found: timing on {args.seconds:g} s of noise", file=sys.stderr)
                noise_file(args.seconds, audio_path, model.sample_rate)
        audio = read_audio(audio_path, model.sample_rate).numpy()
        duration = len(audio) / model.sample_rate
        cli = None if args.no_cli else cli_rtf(audio_path, model_dir, args.chunk_ms, duration)

    chunk = round(model.sample_rate * args.chunk_ms / 1000)
    chunk_frames = max(1, round(args.chunk_ms / 1000 * model.frame_rate))
    chunks = chunks_of(audio, chunk)
    emformer = matched_emformer(model, chunk_frames)
    runs = [(ours_in_process(model, chunks), emformer_in_process(model, emformer, chunks))
            for _ in range(args.repeats)]  # interleaved, so that both see the same load
    ours = (min(r[0][0] for r in runs), min(r[0][1] for r in runs))
    theirs = (min(r[1][0] for r in runs), min(r[1][1] for r in runs))
    ragged = ragged_in_process(model, audio, chunk, args.streams, args.ragged_steps)
    result = {
        "audio_s": duration,
        "chunk_ms": args.chunk_ms,
        "threads": args.threads,
        "cli": cli,
        "swa_stream": {"encoder_params": sum(p.numel() for p in model.encoder.parameters()),
                       "windows": model.encoder.cfg.windows, "step_s": ours[0], "rtf": ours[0] / duration,
                       "cpu_s": ours[1], "cpu_rtf": ours[1] / duration},
        "emformer": {"encoder_params": sum(p.numel() for p in emformer.parameters()),
                     "segment_length": emformer.segment_length, "left_context": emformer.left_context_length,
                     "right_context": emformer.right_context_length, "step_s": theirs[0], "rtf": theirs[0] / duration,
                     "cpu_s": theirs[1], "cpu_rtf": theirs[1] / duration},
        "ragged": ragged,
        "fused_cpu_step": cpu_step.status(),
    }
    print(f"audio {duration:.1f} s in {args.chunk_ms:g} ms chunks, {args.threads} thread(s); fused CPU step: "
          f"{result['fused_cpu_step']}")
    if cli:
        print(f"  swa-stream transcribe, process start to exit: {cli['wall_s']:.2f} s  RTF {cli['rtf']:.4f}")
    for name in ("swa_stream", "emformer"):
        r = result[name]
        print(f"  in process, {name:<10} ({r['encoder_params'] / 1e6:.2f} M encoder params): "
              f"{r['step_s']:.2f} s  RTF {r['rtf']:.4f}  (CPU {r['cpu_s']:.2f} s, RTF {r['cpu_rtf']:.4f})")
    print(f"  ours / Emformer: {ours[0] / theirs[0]:.2f} (wall), {ours[1] / theirs[1]:.2f} (CPU)")
    print(f"  ragged batch of {ragged['streams']} streams: {ragged['ms_per_step_per_stream']:.3f} ms CPU per "
          f"stream per {args.chunk_ms:g} ms step ({ragged['steps']} steps)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
