"""call-genes --faa against Prodigal's proteins on the same genome: where the two call the same gene (the
same start, stop and strand), are the proteins the same, residue for residue?

    swa-stream call-genes GENOME --gff calls.gff3 --faa calls.faa --threads 2
    .venv/bin/python benchmarks/proteins.py GENOME calls.faa --json docs/proteins.json

Prodigal is pyrodigal (the `bench` extra), single mode, trained on the genome itself, its proteins from
`Gene.translate()` (Prodigal's own translation: table 11, the start as M, the stop as "*", as in its .faa
files and ours).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from Bio.SeqIO.FastaIO import SimpleFastaParser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("genome")
    ap.add_argument("faa")
    ap.add_argument("--json")
    args = ap.parse_args()
    import pyrodigal

    from swa_stream.tasks.dna.formats import read_sequences
    from swa_stream.tasks.dna.tokenizer import decode

    ours: dict[tuple, str] = {}
    with open(args.faa) as f:
        for head, protein in SimpleFastaParser(f):
            name, start, end, strand = head.split(" # ")[:4]
            ours[name.rsplit("_", 1)[0], int(start), int(end), int(strand)] = protein
    theirs: dict[tuple, str] = {}
    for rec in read_sequences(args.genome, formats=("fasta",)):
        seq = decode(rec.tokens)
        finder = pyrodigal.GeneFinder()
        finder.train(seq)
        for g in finder.find_genes(seq):
            theirs[rec.id, g.begin, g.end, g.strand] = g.translate()
    same = [k for k in ours if k in theirs]
    equal = sum(ours[k] == theirs[k] for k in same)
    result = {"genome": Path(args.genome).name, "our_calls": len(ours), "prodigal_calls": len(theirs),
              "same_gene": len(same), "same_protein": equal, "pyrodigal": pyrodigal.__version__}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
