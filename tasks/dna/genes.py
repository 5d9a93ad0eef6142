"""The gene-track data set: real bacterial genomes tiled into records with a per-position
"inside a protein-coding gene" track, in the FASTA layout that DNADataModule reads (no labels TSV:
a track-only task).

Splits (the held-out claim rests on them):
- train: S. aureus N315, H. pylori G27, K. pneumoniae HS11286, C. diphtheriae NCTC11397 (GC 33-57%),
  labelled with the genes Prodigal (pyrodigal, single mode, trained on each genome) calls;
- val (model selection): V. cholerae O395, labelled the same way;
- test: E. coli K-12 MG1655 against its RefSeq annotation (non-pseudo CDS), which took no part in
  training or model selection. E. coli 536 and phage lambda are not used, as near relatives of the test
  genome.
pyrodigal is a training-time tool (the `bench` extra), never a runtime one.

    python -m swa_stream.tasks.dna.genes --shared ../shared/data --out data/bacteria_genes
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from swa_stream.errors import SWAStreamError
from swa_stream.tasks.dna.annotation import Interval, read_gff3, write_bed

TRAIN = ("saureus_N315.fasta.gz", "hpylori_G27.fasta.gz", "kpneumoniae_HS11286.fna.gz",
         "cdiphtheriae_NCTC11397.fna.gz")
VAL = ("vcholerae_O395.fasta.gz",)
TEST_FASTA, TEST_GFF = "GCF_000005845.2_ASM584v2_genomic.fna.gz", "GCF_000005845.2_ASM584v2_genomic.gff.gz"
SOURCES = {
    "unannotated genomes": "Debian packages bowtie-examples, ragout-examples, kleborate-examples and the pyrodigal "
    "wheel's test data (GPL / free data); labels: pyrodigal 3.7.1 gene calls",
    "E. coli K-12 MG1655": "NCBI RefSeq GCF_000005845.2 FASTA and GFF3 (public domain)",
}


def read_genome(path: Path) -> list[tuple[str, str]]:
    from Bio import SeqIO

    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as handle:
        return [(rec.id, str(rec.seq).upper()) for rec in SeqIO.parse(handle, "fasta")]


def prodigal_genes(records: list[tuple[str, str]]) -> dict[str, list[Interval]]:
    """Genes pyrodigal calls in single mode, trained on all of the genome's records together."""
    try:
        import pyrodigal
    except ImportError:
        raise SWAStreamError("pyrodigal labels the training genomes: pip install 'swa-stream[bench]'") from None
    finder = pyrodigal.GeneFinder()
    finder.train(*[seq.encode() for _, seq in records])
    out = {}
    for name, seq in records:
        genes = finder.find_genes(seq.encode())
        out[name] = [(g.begin - 1, g.end, "+" if g.strand == 1 else "-") for g in genes]
    return out


def tiles(records, genes, tile: int, prefix: str):
    """Cut each record into tiles of `tile` bp (the last one shorter); intervals move into tile coordinates."""
    for name, seq in records:
        intervals = genes.get(name, [])
        for start in range(0, len(seq), tile):
            end = min(len(seq), start + tile)
            inside = [(max(a, start) - start, min(b, end) - start, s) for a, b, s in intervals if a < end and b > start]
            yield f"{prefix}{name}:{start}-{end}", seq[start:end], inside


def write_split(out: Path, split: str, items) -> tuple[int, int, int]:
    bed, n, bp, coding = {}, 0, 0, 0
    with open(out / f"{split}.fa", "w") as fasta:
        for name, seq, intervals in items:
            fasta.write(f">{name}\n")
            fasta.write("\n".join(seq[i : i + 80] for i in range(0, len(seq), 80)) + "\n")
            bed[name] = intervals
            n, bp = n + 1, bp + len(seq)
            covered = bytearray(len(seq))
            for a, b, _ in intervals:
                covered[a:b] = b"\x01" * (b - a)
            coding += sum(covered)
    write_bed(out / f"{split}.bed", bed)
    return n, bp, coding


def build(shared: Path, out: Path, tile: int = 8192, val_every: int = 4) -> dict:
    genomes = shared / "genomes"
    out.mkdir(parents=True, exist_ok=True)
    summary = {"tile": tile, "splits": {}, "sources": SOURCES}

    def labelled(files):
        for file in files:
            records = read_genome(genomes / "unannotated" / file)
            print(f"labelling {file} with pyrodigal ...", file=sys.stderr)
            yield file, records, prodigal_genes(records)

    train = [t for file, recs, genes in labelled(TRAIN) for t in tiles(recs, genes, tile, file.split("_")[0] + "|")]
    val = [t for file, recs, genes in labelled(VAL) for t in tiles(recs, genes, tile, file.split("_")[0] + "|")]
    val = val[::val_every]  # a quarter of the validation genome keeps each epoch's check short
    test_records = read_genome(genomes / "annotated" / TEST_FASTA)
    test = list(tiles(test_records, read_gff3(genomes / "annotated" / TEST_GFF), tile, "ecoli_K12|"))
    for split, items, files in (("train", train, TRAIN), ("val", val, VAL), ("test", test, (TEST_FASTA,))):
        n, bp, coding = write_split(out, split, items)
        summary["splits"][split] = {"genomes": list(files), "records": n, "bp": bp, "coding_fraction": coding / bp}
        print(f"{split}: {n} records, {bp:,} bp, {coding / bp:.1%} coding", file=sys.stderr)
    (out / "SOURCES.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data/bacteria_genes"))
    parser.add_argument("--tile", type=int, default=8192)
    args = parser.parse_args(argv)
    build(args.shared, args.out, args.tile)


if __name__ == "__main__":
    main()
