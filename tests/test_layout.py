"""The mapped subpackages install under swa_stream, and no generic top-level names leak."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_subpackages_import_from_outside_the_repository(tmp_path):
    code = (
        "import importlib.util, swa_stream.kernels, swa_stream.tasks, swa_stream.pipelines\n"
        "print(swa_stream.kernels.__file__)\n"
        "print(all(importlib.util.find_spec(n) is None for n in ('tasks', 'pipelines')))\n"
        "import swa_stream.kernels as k; print(k.sliding_window_attention is __import__('swa_stream')"
        ".sliding_window_attention)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    kernels_file, no_generic_names, same_function = result.stdout.split()
    assert Path(kernels_file).resolve() == REPO / "kernels" / "__init__.py"
    assert no_generic_names == "True" and same_function == "True"



def test_lint_passes_including_the_ban_on_bare_imports_of_mapped_folders():
    """ruff's TID251 rule bans `import kernels` / `tasks` / `pipelines`: with the repository root on
    sys.path they would load a second copy of the module."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
