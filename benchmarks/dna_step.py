"""Time of one streaming step of a DNA model over both strands, as call-genes and score-fasta --rc-average
stream a chromosome.

Random bases, two rows (a record and its reverse complement), `--chunk` positions a step; the first two
steps warm up, the next `--steps` are timed. `--tree DIR` runs another checkout's code (say, `git worktree add
/tmp/old COMMIT`) with this environment, so that two versions can be timed in alternation on a machine whose
speed drifts:

    for i in 1 2 3; do
        .venv/bin/python benchmarks/dna_step.py --tree /tmp/old --threads 1
        .venv/bin/python benchmarks/dna_step.py --threads 1
    done
"""

from __future__ import annotations

import argparse
import sys
import time


def use_tree(root: str) -> None:
    """Point this environment's editable install of swa_stream at another checkout."""
    finders = [m for name, m in sys.modules.items() if name.startswith("__editable___swa_stream")]
    if not finders:
        raise SystemExit("--tree needs swa-stream installed in editable mode (pip install -e .)")
    finders[0].MAPPING.update({"swa_stream": f"{root}/swa_stream", "swa_stream.kernels": f"{root}/kernels",
                               "swa_stream.pipelines": f"{root}/pipelines", "swa_stream.tasks": f"{root}/tasks"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bacteria-genes")
    parser.add_argument("--chunk", type=int, default=1 << 14)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tree", help="another checkout to time instead of this one")
    args = parser.parse_args()
    if args.tree:
        use_tree(args.tree)
    import numpy as np
    import torch

    from swa_stream.pipelines.bundles import load_dna_model
    from swa_stream.tasks.dna.tokenizer import reverse_complement

    torch.set_num_threads(args.threads)
    model = load_dna_model(args.model)
    tokens = np.random.default_rng(0).integers(0, 4, args.chunk * (args.steps + 2)).astype(np.uint8)
    rows = torch.from_numpy(np.stack([tokens, reverse_complement(tokens)]).astype(np.int64))
    with torch.inference_mode():
        state = model.init_state(batch_size=2)
        for i in range(args.steps + 2):
            if i == 2:
                began = time.perf_counter()
            _, state = model.step(rows[:, i * args.chunk : (i + 1) * args.chunk], state)
    seconds = (time.perf_counter() - began) / args.steps
    print(f"{args.tree or 'this tree'}: {seconds * 1e3:.1f} ms a step of 2 x {args.chunk} positions, "
          f"{args.chunk / seconds / 1e3:.1f} kbp/s of genome, both strands, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
