#!/usr/bin/env bash
# One command for a GPU machine where the repository is not pip-installed:
#     bash benchmarks/gpu_check.sh [--json PATH] [--smoke] [gpu_check.py options]
# PYTHON picks the interpreter (default python3), e.g. PYTHON=.venv/bin/python for the CPU smoke run.
#
# pyproject maps kernels/, tasks/ and pipelines/ into the swa_stream package, and only an install applies
# that map. So this stages the package by hand in a temporary folder: swa_stream/ copied, the three mapped
# folders linked in as its subpackages. Nothing is written to the repository.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stage="$(mktemp -d "${TMPDIR:-/tmp}/swa-stream-stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

cp -R "$repo/swa_stream" "$stage/swa_stream"
for sub in kernels tasks pipelines; do
    rm -rf "$stage/swa_stream/$sub"
    ln -s "$repo/$sub" "$stage/swa_stream/$sub"
done

cd "$repo"
# The check keeps its own time budget; the timeout is the hard stop inside the 8 minutes.
PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
    timeout "${GPU_CHECK_TIMEOUT_S:-470}" "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
