"""The `swa-stream` command. User errors print one line and exit 2; `--debug` shows the traceback.

`fit`, `validate`, `test` and `predict` go to the LightningCLI (tasks/cli.py) untouched; the other
subcommands are thin argparse front-ends over pipelines/*.py, imported only when used.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from swa_stream.errors import SWAStreamError, printable
from swa_stream.tasks.asr.schema import ASRSchema
from swa_stream.tasks.dna.schema import DNASchema

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swa-stream",
        description="Exact streaming sliding-window attention for speech and DNA. "
        f"Training: swa-stream {{{','.join(LIGHTNING_COMMANDS)}}} --config FILE.yaml",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="receptive field, latency, state size and cost of a config")
    source = info.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML file with an encoder section (SWAConfig fields) or a task config")
    source.add_argument("--model", metavar="DIR", help="a model bundle folder (e.g. made by swa-stream export) or "
                        "the name of a bundled model")
    info.add_argument("--chunk-ms", type=float, default=160.0, help="speech chunk for the latency line (default 160)")
    info.add_argument("--plot", metavar="PNG", help="draw the receptive field layer by layer")

    demo = commands.add_parser("demo", help="show the bundled configs and check streaming == offline")
    demo.add_argument("--configs", default="configs", help="folder of YAML configs (default: configs)")
    demo.add_argument("--length", type=int, default=2000, help="positions to stream per config")

    data = commands.add_parser("demo-data", help="write a synthetic data set for a task")
    data.add_argument("task", choices=["dna", "asr"])
    data.add_argument("--out", required=True, help="output folder")
    data.add_argument("--n-train", type=int, default=8000)
    data.add_argument("--n-val", type=int, default=1000)
    data.add_argument("--n-test", type=int, default=1000)
    data.add_argument("--length", type=int, default=320, help="bases per DNA record")
    data.add_argument("--edge-margin", type=int, default=40,
                      help="DNA: bases kept free of motifs at each end (0: the warm-up variant, see docs/dna.md)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--jobs", type=int, default=0, help="worker processes for asr (default: all cores)")

    fasta = commands.add_parser("score-fasta", help="score FASTA records into zarr (and TSV), resumably")
    fasta.add_argument("inputs", nargs="+", metavar="IN.fa",
                       help="FASTA, FASTQ, GenBank, EMBL or CSV/TSV files or streams, plain, gzip, bzip2 or xz; "
                       "- reads stdin")
    fasta.add_argument("--out", required=True, metavar="OUT.zarr", help="zarr v3 store to create")
    fasta.add_argument("--tsv", metavar="OUT.tsv", help="also write one row per record (- for stdout)")
    fasta.add_argument("--per-position", action="store_true", help="store per-position score tracks")
    fasta.add_argument("--rc-average", action="store_true", help="average with the reverse complement")
    fasta.add_argument("--chunk-size", type=int, default=1 << 14, help="positions per streaming step (of each "
                       "strand with --rc-average, which streams both at once)")
    fasta.add_argument("--batch-size", type=int, default=256, help="most short records scored together "
                       "(default 256; a batch also stays within --chunk-size positions)")
    fasta.add_argument("--model", metavar="DIR", help="model bundle folder or bundled model name "
                       f"(default: {DNASchema.default_model})")
    fasta.add_argument("--devices", type=int, default=1, help="processes (or GPUs) to spread records over")
    fasta.add_argument("--num-nodes", type=int, default=1, help="machines, each running --devices processes "
                       "(launched by torchrun or SLURM; see docs/dna.md)")
    fasta.add_argument("--windows", type=int, metavar="W", help="score W bp windows of each record, each "
                       "as a row of its own, instead of the whole record (a classifier trained on short records, "
                       "such as ecoli-promoters' 81 bp, scanning a genome)")
    fasta.add_argument("--stride", type=int, metavar="S", help="--windows: bp between window starts (default 10); "
                       "a last window ends at the record's end")
    fasta.add_argument("--strand", choices=["both", "+", "-"], help="--windows: the strands to scan (default both, "
                       "as rows of their own; the - strand's windows are reverse-complemented)")
    fasta.add_argument("--rna", action="store_true", help="read U as T")
    fasta.add_argument("--column", help="CSV/TSV: the sequence column, a header name or a number from 1")
    fasta.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: more threads "
                       "only pay on an idle machine, and collapse when the cores are busy; with --rc-average, "
                       "2 or more step a long record's two strands side by side, half the threads each)")

    genes = commands.add_parser("call-genes", help="gene calls (GFF3) from a gene-track model, like Prodigal's")
    genes.add_argument("inputs", nargs="+", metavar="IN.fa",
                       help="FASTA, FASTQ, GenBank or EMBL files (gzip, bzip2, xz); - reads stdin")
    genes.add_argument("--gff", required=True, metavar="OUT.gff3",
                       help="GFF3 file of the calls to write (- for stdout)")
    genes.add_argument("--bedgraph", metavar="FILE", help="also write the called track as bedGraph (- for stdout)")
    genes.add_argument("--faa", metavar="FILE", help="also write each call's protein as FASTA, as Prodigal's -a "
                       "(translated by --table's code; - for stdout)")
    genes.add_argument("--fna", metavar="FILE", help="also write each call's bases as FASTA, as Prodigal's -d "
                       "(- for stdout)")
    genes.add_argument("--table", type=int, choices=[11, 4, 25], default=11, help="genetic code, as prodigal -g: "
                       "11 bacterial (default), 4 Mycoplasma and Spiroplasma (TGA is Trp), 25 SR1 (TGA is Gly)")
    genes.add_argument("--closed-ends", action="store_true", help="genes may not run off a record's ends "
                       "(prodigal -c); by default a gene cut by a contig's edge is called, flagged partial")
    genes.add_argument("--model", metavar="DIR", help="gene-track bundle (default: the bundled "
                       f"{DNASchema.default_model})")
    genes.add_argument("--rna", action="store_true", help="read U as T")
    genes.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 2 or more step the "
                       "two strands side by side, half the threads each)")
    track = commands.add_parser("export-track", help="write a per-position track as bedGraph and/or bigWig")
    track.add_argument("store", metavar="OUT.zarr", help="a finished score-fasta --per-position store")
    track.add_argument("--bedgraph", metavar="FILE", help="bedGraph file to write (- for stdout)")
    track.add_argument("--bigwig", metavar="FILE", help="bigWig file to write")
    track.add_argument("--track", help="track name (default: the first)")
    track.add_argument("--precision", type=int, default=3, help="decimals kept; equal runs merge")

    tr = commands.add_parser("transcribe", help="speech to text from a file, stdin or the microphone, streamed")
    tr.add_argument("inputs", nargs="*", metavar="PATH|-",
                    help="wav/flac/ogg/mp3 at any rate (m4a, webm, mp4 with ffmpeg); - reads stdin; several: one "
                    "after another in one process, each line labelled with its file")
    tr.add_argument("--model", metavar="DIR", help="ASR bundle folder or bundled model name "
                    f"(default: {ASRSchema.default_model})")
    tr.add_argument("--mic", action="store_true", help="record from the default input device (Ctrl-C stops)")
    tr.add_argument("--raw", action="store_true", help="input is headerless s16le PCM; needs --sample-rate")
    tr.add_argument("--sample-rate", type=int, help="sample rate of --raw input in Hz")
    tr.add_argument("--channels", type=int, default=1, help="interleaved channels of --raw input (default 1)")
    tr.add_argument("--chunk-ms", type=float, default=160.0, help="input per streaming step (default 160); "
                    "final results do not depend on it")
    tr.add_argument("--format", choices=["text", "jsonl", "srt", "vtt"], default="text",
                    help="text: one line per final segment; jsonl: partial and final lines; srt/vtt: subtitles")
    tr.add_argument("--endpoint-silence", type=float, default=1.2, metavar="S",
                    help="end a segment after S seconds of silence following speech (default 1.2; 0 disables)")
    tr.add_argument("--endpoint-silence-no-speech", type=float, default=2.4, metavar="S",
                    help="restart after S seconds of silence with no speech (default 2.4; 0 disables)")
    tr.add_argument("--max-segment", type=float, default=20.0, metavar="S",
                    help="end a segment once it is S seconds long (default 20; 0 disables)")
    tr.add_argument("--no-endpoint", action="store_true", help="no endpointing: one final segment at the end")
    tr.add_argument("--open-vocabulary", action="store_true", help="print words as spelled, even outside the "
                    "model's lexicon (default: a misspelt word becomes the lexicon word that fits best)")
    tr.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: streaming steps are "
                    "too small to gain from more, and thread synchronisation costs more than it saves)")

    from swa_stream.pipelines.serve_args import add_serve, add_stream_to  # argparse only: nothing heavy

    add_serve(commands.add_parser("serve", help="websocket speech server (vosk-compatible and native), mic page"))
    add_stream_to(commands.add_parser("stream-to", help="send a file or the microphone to swa-stream serve"))

    export = commands.add_parser("export", help="turn a training checkpoint into a model bundle")
    export.add_argument("checkpoint", help="a Lightning .ckpt that you trained (loaded safely: no code in it runs)")
    export.add_argument("--out", required=True, help="bundle folder: config.json + model.safetensors")
    return parser


def _guarded(action, debug: bool) -> int:
    try:
        action()
    except SWAStreamError as err:
        if debug:
            raise
        print(f"swa-stream: error: {printable(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("swa-stream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`swa-stream info ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141
    except OSError as err:  # a full disk or an I/O error while writing: one line, not a traceback
        if debug or err.errno not in CANNOT_WRITE:
            raise
        where = err.filename
        if where is None:  # a failed write names no file: stdout, or a file being written
            where = "stdout or an output file"
            try:
                sys.stdout.flush()
            except OSError:
                where = "stdout"
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush would fail too
        _cannot_write(where, err)
        return 1
    return 0


def _cannot_write(where: str, err: Exception) -> None:
    """The one line for output that could not be written (a full disk, an I/O error)."""
    try:
        print(f"swa-stream: error: {where}: cannot write ({getattr(err, 'strerror', None) or err})", file=sys.stderr,
              flush=True)
    except (OSError, ValueError, AttributeError):  # stderr is gone too: the exit status says it
        pass


CANNOT_WRITE = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG)  # OSErrors that mean "could not write"


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "info":
        from swa_stream.pipelines import info

        info.run(args.config, args.plot, model=args.model, chunk_ms=args.chunk_ms)
    elif args.command == "demo":
        from swa_stream.pipelines import demo

        demo.run(args.configs, args.length)
    elif args.command == "demo-data":
        from swa_stream.pipelines import demo_data

        demo_data.run(args)
    elif args.command == "score-fasta":
        from swa_stream.pipelines import score_fasta

        score_fasta.run(args)
    elif args.command == "call-genes":
        from swa_stream.pipelines import call_genes

        call_genes.run(args)
    elif args.command == "export-track":
        from swa_stream.pipelines import export_track

        export_track.run(args)
    elif args.command == "transcribe":
        from swa_stream.pipelines import transcribe

        transcribe.run(args)
    elif args.command == "serve":
        from swa_stream.pipelines import serve

        serve.run(args)
    elif args.command == "stream-to":
        from swa_stream.pipelines import stream_to

        stream_to.run(args)
    elif args.command == "export":
        from swa_stream.pipelines import export

        export.run(args.checkpoint, args.out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    if _command(argv) in LIGHTNING_COMMANDS:  # training goes through LightningCLI untouched
        from swa_stream.tasks.cli import run as lightning_run

        return _guarded(lambda: lightning_run([a for a in argv if a != "--debug"]), debug)
    args = _parser().parse_args(argv)
    args.argv = argv  # recorded in outputs' metadata
    return _guarded(lambda: _dispatch(args), args.debug)


def _command(argv: list[str]) -> str | None:
    """The subcommand: the first argument that is not an option (the only top-level options, --debug and
    --help, take no value), so a file named `test` after a command is never taken for one."""
    return next((a for a in argv if not a.startswith("-")), None)


# One-process commands whose work is all written and closed when they return. They end with os._exit, which
# skips the C++ static destructors of torch's CUDA libraries: those fault 124 MB of pages in and take about
# 0.3 s on a CPU-only machine, at the very end, after the work (docs/dna.md, "Memory and threads").
FAST_EXIT = ("info", "score-fasta", "call-genes", "export-track", "transcribe", "export")


def _fast_exit(argv: list[str]) -> bool:
    command = _command(argv)
    try:
        distributed = int(os.environ.get("WORLD_SIZE") or 1) > 1
    except ValueError:  # not ours to judge: exit the usual way
        distributed = True
    if command not in FAST_EXIT or distributed:
        return False
    if command == "score-fasta":  # more than one process: Fabric's processes end the usual way
        args = _parser().parse_args(argv)
        return args.devices == 1 and args.num_nodes == 1
    return True


def _flushed(code: int) -> int:
    """Flush stdout and stderr before os._exit; a reader that left is 141 (as before), a failed write 1."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:  # started with the stream closed
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or 141
        except (OSError, ValueError) as err:  # a full disk, an I/O error, a stream closed under us
            if name == "stdout":
                _cannot_write("stdout", err)
            code = code or 1
    return code


def entry() -> None:
    """The `swa-stream` console script: main(), then the exit (tests call main() itself)."""
    argv = sys.argv[1:]
    code = main(argv)
    if _fast_exit(argv):
        os._exit(_flushed(code))
    sys.exit(code)


if __name__ == "__main__":
    entry()
