"""`swa-stream call-genes`: gene calls in GFF3 from a gene-track model, as Prodigal writes them.

Each record is streamed through the model exactly, both strands at once (the forward sequence and its
reverse complement as two rows of one batch, tasks/dna/track.py), and the two strands' coding
probabilities are averaged per base. The open reading frames that this track covers best become the calls
(tasks/dna/orfs.py). `--bedgraph` also writes the called track (half the track outside calls; inside one,
0.5 plus a quarter of the track and a quarter of the start coverage, so 0.5 separates called from not).
`--faa` and `--fna` write each call's protein and bases as FASTA, as Prodigal's -a and -d do (the same
header layout, and the protein ends in "*" as Prodigal's do). As in Prodigal, a gene may run off a record's
end (a draft assembly's contigs cut genes): its GFF3 row and headers say `partial=10` (left end), `01`
(right end) or `11`; `--closed-ends` forbids that, as prodigal -c. Outputs are checked before any work and
written through a temp file and a rename, so a failed run leaves no half file and never touches an input;
a text output named "-" goes to stdout.

    swa-stream call-genes genome.fa.gz --gff genes.gff3 [--bedgraph called.bedgraph] [--faa proteins.faa]
        [--fna genes.fna] [--model bacteria-genes]
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path
from urllib.parse import quote

from swa_stream.errors import SWAStreamError
from swa_stream.pipelines.safe_output import atomic_text, check_output_file, first_line, is_stdout

DEFAULT_MODEL = "bacteria-genes"


def _is_gff(path: Path) -> bool:
    """A GFF3 file call-genes wrote (its second line says so): only those are replaced, never an annotation."""
    with open(path, "rb") as f:
        head = f.read(512).split(b"\n")
    return head[0].startswith(b"##gff-version") and len(head) > 1 and head[1].startswith(b"# swa-stream call-genes")


def _seqid(text: str) -> str:
    """A record id as a GFF3 seqid: characters outside the spec's set percent-encoded."""
    return quote(text, safe=".:^*$@!+_?-|").replace("~", "%7E")  # quote() keeps "~", GFF3 does not


def run(args) -> dict:
    import torch
    from tqdm import tqdm

    from swa_stream.pipelines.allocator import keep_freed_memory
    from swa_stream.pipelines.bundles import load_dna_model
    from swa_stream.pipelines.export_track import is_bedgraph
    from swa_stream.tasks.dna.formats import read_sequences
    from swa_stream.tasks.dna.orfs import call_genes, called_track, gene_bases
    from swa_stream.tasks.dna.tokenizer import check_inputs
    from swa_stream.tasks.dna.track import mask_n, stream_both_strands

    inputs = check_inputs(args.inputs)
    gff = check_output_file(args.gff, "--gff", inputs, [], _is_gff, "GFF3 file that call-genes wrote", stdout=True)
    outputs = {"gff": gff}
    for flag, looks, kind in (("bedgraph", is_bedgraph, "bedGraph file that swa-stream wrote"),
                              ("faa", _is_fasta, "FASTA file of call-genes' calls"),
                              ("fna", _is_fasta, "FASTA file of call-genes' calls")):
        if getattr(args, flag, None) is not None:
            outputs[flag] = check_output_file(getattr(args, flag), f"--{flag}", inputs, list(outputs.values()),
                                              looks, kind, stdout=True)
    if args.threads < 1:
        raise SWAStreamError(f"--threads: must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # each step's tensors reuse the last step's pages (pipelines/allocator.py)
    model = load_dna_model(args.model or DEFAULT_MODEL)  # its first track is read as P(coding)
    if not model.track_only:  # a record classifier's track was never trained on genes
        raise SWAStreamError(
            f"--model {args.model}: a record classifier (classes: {', '.join(model.classes) or 'none'}), not a "
            "gene-track model; call-genes reads a per-position coding track from a model without classes, such "
            "as bacteria-genes")
    summary = {"records": 0, "bp": 0, "genes": 0, "seconds": 0.0}
    seen: set[str] = set()
    with contextlib.ExitStack() as files:
        out, bg, faa, fna = (files.enter_context(atomic_text(outputs[k])) if k in outputs else None
                             for k in ("gff", "bedgraph", "faa", "fna"))
        out.write("##gff-version 3\n")
        out.write(f"# swa-stream call-genes, model {args.model or DEFAULT_MODEL}: gene calls from its coding "
                  f"track (tasks/dna/orfs.py); transl_table={args.table}; "
                  f"{'closed ends' if args.closed_ends else 'genes may run off the ends'}\n")
        if bg is not None:
            bg.write('track type=bedGraph name="called" description="swa-stream call-genes: track/2 outside calls, '
                     '0.5 + track/4 + start coverage/4 inside"\n')
        for path in inputs:
            for record in read_sequences(path, rna=args.rna, formats=("fasta", "fastq", "genbank", "embl")):
                began = time.perf_counter()
                n = len(record.tokens)
                with tqdm(total=n, desc=record.id[:30], unit=" bp", unit_scale=True, file=sys.stderr,
                          leave=False, mininterval=0.5, disable=None) as bar:
                    prob = mask_n(stream_both_strands(model, record.tokens, on_chunk=bar.update), record.tokens)
                genes = call_genes(record.tokens, prob, edges=not args.closed_ends, table=args.table)
                seqid = _seqid(record.id)
                if seqid in seen:
                    raise SWAStreamError(f"{record.file}: record id {record.id!r} occurs twice; GFF3 needs unique "
                                         "sequence ids (rename one)")
                seen.add(seqid)
                if n:  # GFF3 has no empty region
                    out.write(f"##sequence-region {seqid} 1 {n}\n")
                for k, g in enumerate(genes, start=1):
                    out.write(f"{seqid}\tswa-stream\tCDS\t{g.start + 1}\t{g.end}\t{g.mean:.3f}\t{g.strand}\t0\t"
                              f"ID={seqid}_{k};partial={g.partial};mean_p={g.mean:.3f}\n")
                    if faa is not None or fna is not None:
                        _write_sequences(faa, fna, f"{seqid}_{k}", g, gene_bases(record.tokens, g), args.table)
                if bg is not None:
                    _write_bedgraph(bg, seqid, called_track(prob, genes))
                seconds = time.perf_counter() - began
                coding = sum(g.end - g.start for g in genes) / max(1, n)
                print(f"{record.id}: {n:,} bp, {len(genes):,} genes ({coding:.1%} of the bases), "
                      f"{n / max(seconds, 1e-9) / 1e3:.0f} kbp/s", file=sys.stderr)
                summary["records"] += 1
                summary["bp"] += n
                summary["genes"] += len(genes)
                summary["seconds"] += seconds
    if not summary["records"]:
        raise SWAStreamError(f"{', '.join(map(str, inputs))}: no sequence records")
    where = lambda path: "stdout" if is_stdout(path) else str(path)  # noqa: E731
    also = {"bedgraph": "the called track", "faa": "the proteins", "fna": "the genes' bases"}
    print(f"wrote {summary['genes']:,} gene calls on {summary['records']:,} record(s) to {where(gff)}"
          + "".join(f", {what} to {where(outputs[k])}" for k, what in also.items() if k in outputs),
          file=sys.stderr if any(map(is_stdout, outputs.values())) else sys.stdout)
    return summary


_OUR_FASTA = re.compile(rb">\S+ # \d+ # \d+ # -?1 # ID=")  # the header layout of --faa and --fna


def _is_fasta(path: Path) -> bool:
    """A FASTA file --faa or --fna wrote: only those are replaced, never a genome that sits beside the input."""
    return bool(_OUR_FASTA.match(first_line(path)))


def _write_sequences(faa, fna, name: str, gene, bases: str, table: int = 11, width: int = 60) -> None:
    """A call as Prodigal's -a/-d FASTA: `>ID # start # end # strand # attributes`, 1-based, strand 1 or -1;
    a gene whose 5' end lies off the record has start_type=Edge, and its protein no initial M."""
    from swa_stream.tasks.dna.orfs import translate

    edge = gene.partial[0 if gene.strand == "+" else 1] == "1"
    head = (f">{name} # {gene.start + 1} # {gene.end} # {1 if gene.strand == '+' else -1} # ID={name};"
            f"partial={gene.partial};mean_p={gene.mean:.3f};start_type={'Edge' if edge else bases[:3]}\n")
    for f, text in ((faa, translate(bases, start=not edge, table=table) if faa is not None else ""), (fna, bases)):
        if f is not None:
            f.write(head + "".join(text[i : i + width] + "\n" for i in range(0, len(text), width)))


def _write_bedgraph(f, seqid: str, values, precision: int = 3) -> None:
    """One record's track as bedGraph lines: runs of equal rounded values, N (NaN) left out, as export-track."""
    import numpy as np

    from swa_stream.pipelines.export_track import value_runs

    for start, end, value in value_runs(np.round(values.astype(np.float64), precision)):
        f.write(f"{seqid}\t{start}\t{end}\t{value:.{precision}f}\n")

