"""Time of one streaming step of a DNA model over both strands, as call-genes and score-fasta --rc-average
stream a chromosome.

Random bases, two rows (a record and its reverse complement), `--chunk` positions a step; the first two
steps warm up, the next `--steps` are timed. `--tree DIR` runs another checkout's code (say, `git worktree add
/tmp/old COMMIT`) with this environment, so that two versions can be timed in alternation on a machine whose
speed drifts. `--split` steps each row as a stream of its own on its own thread, with torch's threads shared
between them, as `stream_rows` does on the CPU (tasks/dna/model.py):

    for i in 1 2 3; do
        .venv/bin/python benchmarks/dna_step.py --tree /tmp/old --threads 1
        .venv/bin/python benchmarks/dna_step.py --threads 1
    done
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("--split", action="store_true", help="each row a stream on a thread of its own")
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
    workers = 2 if args.split else 1
    if args.split:
        from swa_stream.tasks.dna.model import _row_workers, _split

        stepping = _row_workers(workers)
    else:  # a plain loop (an older --tree has no _row_workers)
        def _split(rows, _):
            return [rows]

        stepping = contextlib.nullcontext(lambda fn, *lists: [fn(*args) for args in zip(*lists, strict=True)])
    with torch.inference_mode(), stepping as each:
        states = each(lambda r: model.init_state(batch_size=len(r)), _split(rows, workers))
        for i in range(args.steps + 2):
            if i == 2:
                began = time.perf_counter()
            pieces = _split(rows[:, i * args.chunk : (i + 1) * args.chunk], workers)
            states = [state for _, state in each(model.step, pieces, states)]
    seconds = (time.perf_counter() - began) / args.steps
    how = "each row on its own thread" if args.split else "one two-row stream"
    print(f"{args.tree or 'this tree'}: {seconds * 1e3:.1f} ms a step of 2 x {args.chunk} positions, "
          f"{args.chunk / seconds / 1e3:.1f} kbp/s of genome, both strands, {args.threads} thread(s), {how}")


if __name__ == "__main__":
    main()
