"""Average the weights of bundles of one architecture (a model soup) into a new bundle.

    .venv/bin/python benchmarks/soup.py runs/asr_real_phase4_bundle runs/p6_best --out runs/soup_p4_p6

The config (and so the lexicon and the training-data credits) is the first bundle's; every bundle must
have the same tensors. Used for the soups that docs/asr.md reports as tried and not shipped.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    weights = [load_file(str(b / "model.safetensors")) for b in args.bundles]
    if any(w.keys() != weights[0].keys() or any(w[k].shape != weights[0][k].shape for k in w) for w in weights):
        raise SystemExit("the bundles do not have the same tensors")
    soup = {k: sum(w[k] for w in weights) / len(weights) if weights[0][k].is_floating_point() else weights[0][k]
            for k in weights[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(soup, str(args.out / "model.safetensors"))
    shutil.copy(args.bundles[0] / "config.json", args.out / "config.json")
    print(f"{args.out}: the mean of {len(weights)} bundles")


if __name__ == "__main__":
    main()
