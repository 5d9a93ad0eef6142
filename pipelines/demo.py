"""`swa-stream demo`: show every bundled config, prove on each that streaming equals offline, then run the
bundled demo models on their bundled examples: bacteria-genes on a real E. coli region (a table and a
picture against the annotation), primate-splice on twelve held-out splice junctions of real primate genes,
dna-demo (the long-range teaching example) on its FASTA file, and asr-demo on two wav files (a synthetic voice
and real ones).

The config checks use randomly initialised (seeded) encoders: exactness is a property of the architecture,
not of the weights.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from swa_stream import SWAEncoder
from swa_stream.errors import SWAStreamError
from swa_stream.pipelines.info import describe, load_encoder_config


@torch.no_grad()
def stream_check(encoder: SWAEncoder, length: int, seed: int = 0) -> dict:
    """Stream `length` random positions in random chunk sizes; compare with the offline pass."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, length, encoder.cfg.d_model, generator=gen)
    widest = max(left + right for left, right in encoder.cfg.windows) + 1
    chunks = []
    while sum(chunks) < length:
        chunks.append(min(length - sum(chunks), rng.randint(1, 2 * widest)))

    t0 = time.perf_counter()
    offline = encoder(x)
    t_offline = time.perf_counter() - t0

    state = encoder.init_state(batch_size=1)
    state_bytes = {state.nbytes()}
    outs, i = [], 0
    t0 = time.perf_counter()
    for size in chunks:
        out, state = encoder.step(x[:, i : i + size], state)
        outs.append(out)
        state_bytes.add(state.nbytes())
        i += size
    tail = encoder.flush(state)
    t_stream = time.perf_counter() - t0
    streamed = torch.cat(outs + [tail], dim=1)
    return {
        "length": length,
        "chunks": len(chunks),
        "smallest_chunk": min(chunks),
        "largest_chunk": max(chunks),
        "max_abs_error": (streamed - offline).abs().max().item(),
        "held_back_for_flush": tail.shape[1],
        "state_bytes": sorted(state_bytes),
        "offline_s": t_offline,
        "stream_s": t_stream,
    }


def _bundled(name: str, example: str) -> tuple[Path, str] | None:
    """(the bundled model `name`'s folder, the path of its example file), or None when it is not bundled."""
    from importlib import resources

    from swa_stream.pipelines.bundles import bundled_models, model_dir

    if name not in bundled_models():
        print(f"(no bundled {name} model in this checkout: skipping its example)")
        return None
    return model_dir(name, "dna"), str(resources.files("swa_stream.pipelines").joinpath("examples", example))


def score_classifier_example(name: str, example_name: str, about: str, chunk_size: int, closing: str) -> None:
    """Score a bundled example FASTA (headers carry `truth=CLASS`) with the bundled record classifier
    `name`, streaming in `chunk_size` pieces, and print each record's class probabilities and prediction."""
    import tempfile

    from swa_stream.pipelines.bundles import load_dna_model
    from swa_stream.pipelines.score_fasta import ScoreOptions, score
    from swa_stream.tasks.dna.tokenizer import read_fasta

    if (found := _bundled(name, example_name)) is None:
        return
    model_dir, example = found
    model = load_dna_model(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        summary = score([example], f"{tmp}/out.zarr", model, str(model_dir),
                        ScoreOptions(chunk_size=chunk_size), tsv=f"{tmp}/out.tsv")
        rows = [line.split("\t") for line in open(f"{tmp}/out.tsv").read().splitlines()[1:]]
    print(f"== {name}, {about}, on {example}\n   (streamed in chunks of {chunk_size} bp: swa-stream score-fasta "
          f"{Path(example).name} --model {name} --chunk-size {chunk_size})")
    print(f"{'record':<12} {'truth':<32} " + " ".join(f"{'p_' + c:>7}" for c in model.classes) + "  prediction")
    right = 0
    for rec, row in zip(read_fasta(example), rows, strict=True):
        probs = [float(p) for p in row[4 : 4 + len(model.classes)]]
        truth = rec.description.split(None, 1)[1]
        predicted = model.classes[max(range(len(probs)), key=probs.__getitem__)]
        right += truth.startswith(f"truth={predicted} ")
        print(f"{rec.id:<12} {truth:<32} " + " ".join(f"{p:>7.3f}" for p in probs) + f"  {predicted}")
    print(f"{right} of {summary['records']} right ({closing})\n")


def transcribe_asr_example(chunk_ms: float = 160.0, example_name: str = "asr_demo.wav", about: str = "") -> None:
    """Stream a bundled example wav through the bundled asr-demo model, printing partial and final lines."""
    from swa_stream.pipelines.bundles import load_asr_model
    from swa_stream.pipelines.transcribe import Writer, file_source, transcribe_chunks
    from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig

    if (found := _bundled("asr-demo", example_name)) is None:
        return
    model_dir, example = found
    model = load_asr_model(model_dir)
    print(f"== asr-demo on {example}{about} (streamed in {chunk_ms:g} ms chunks; "
          f"swa-stream transcribe {Path(example).name} --format jsonl)")
    rate, chunks = file_source(example, chunk_ms)
    t0 = time.perf_counter()
    finals = transcribe_chunks(model, chunks, rate, CTCDecoder.for_model(model, EndpointConfig()),
                               Writer("jsonl"))
    print(f"{len(finals)} final segments in {time.perf_counter() - t0:.2f} s\n")


def run(configs_dir: str = "configs", length: int = 2000) -> None:
    folder = Path(configs_dir)
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise SWAStreamError(f"{folder}: no *.yaml configs found (run the demo from the repository root)")
    torch.manual_seed(0)
    worst = 0.0
    for path in paths:
        cfg = load_encoder_config(path)
        print(f"== {path}")
        print(describe(cfg))
        r = stream_check(SWAEncoder(cfg).eval(), length)
        worst = max(worst, r["max_abs_error"])
        print(
            f"\nstreamed {r['length']} positions in {r['chunks']} chunks of {r['smallest_chunk']}.."
            f"{r['largest_chunk']} ({r['held_back_for_flush']} held back until flush): "
            f"max |streamed - offline| = {r['max_abs_error']:.2e}; state stayed at "
            f"{', '.join(str(b) for b in r['state_bytes'])} bytes; "
            f"offline {r['offline_s'] * 1e3:.0f} ms, streamed {r['stream_s'] * 1e3:.0f} ms\n"
        )
    from swa_stream.pipelines import genes_demo

    genes_demo.run()
    score_classifier_example("primate-splice", "primate_splice.fa", "splice junctions of real primate genes",
                             20, "held-out test sequences, CC BY 4.0, credited in primate_splice.md; docs/dna.md has "
                             "its accuracy on all 1,186")
    score_classifier_example("dna-demo", "dna_demo.fa", "the long-range teaching example (synthetic motifs)", 100,
                             "docs/dna.md gives its accuracy on the benchmark's test set")
    transcribe_asr_example()
    transcribe_asr_example(example_name="asr_fsdd.wav", about=", real voices held out of training (FSDD, CC BY-SA 4.0; "
                           "asr_fsdd.md says who spoke what)")
    verdict = "equal" if worst <= 1e-5 else "NOT equal"
    print(f"streaming vs offline over {len(paths)} configs: {verdict} (largest error {worst:.2e}, bound 1e-5)")
    if worst > 1e-5:
        raise SWAStreamError(f"streamed output differs from offline by {worst:.2e}")
