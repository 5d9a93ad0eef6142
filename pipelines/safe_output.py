"""Outputs that cannot destroy inputs: checked before any work, written through a temp file and a rename.

Every output path is refused before work starts if it names an input, another output, or something that
already exists as something else (a directory, a FIFO, a file that is not this kind of output). Its
folder's writability is proven by creating a file there, which also works where `os.access` lies (root on a
read-only mount says yes). Writing goes to `.NAME.tmp-PID` in the same folder, fsynced, then renamed, so a
crash or a full disk leaves the old file or none, never half of one.

A text output named "-" is standard output (`--gff -`, `--tsv -`, `--bedgraph -`), where the caller allows
it: written as it goes, with no temp file; the command's own messages then go to stderr.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from swa_stream.errors import SWAStreamError

STDOUT = "-"  # an output path meaning standard output


def is_stdout(path) -> bool:
    return path is not None and str(path) == STDOUT


def os_problem(path: str | Path, err: OSError) -> SWAStreamError:
    """One true line for an OSError met while writing `path`."""
    if err.errno == errno.ENOSPC:
        what = "disk full (no space left on device)"
    elif err.errno == errno.EROFS:
        what = "read-only file system"
    elif err.errno in (errno.EACCES, errno.EPERM):
        what = "permission denied"
    else:
        what = err.strerror or str(err)
    return SWAStreamError(f"{path}: cannot write: {what}")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def check_output_file(
    path: str | Path,
    flag: str,
    inputs: list[Path],
    taken: list[Path],
    looks_like: Callable[[Path], bool] | None = None,
    kind: str = "file",
    stdout: bool = False,
) -> Path:
    """Refuse an output file path that would overwrite an input, another output, or a non-`kind` thing.
    With `stdout`, "-" is standard output (Path("-")), unless another of `taken` is too."""
    if path is None or str(path) == "":
        raise SWAStreamError(f"{flag}: an empty path; give a file name")
    if is_stdout(path):
        if not stdout:
            raise SWAStreamError(f"{flag} -: a {kind} cannot be written to standard output; give a file name")
        if any(is_stdout(other) for other in taken):
            raise SWAStreamError(f"{flag} -: another output already goes to standard output; give one a file name")
        return Path(STDOUT)
    path = Path(path)
    for other in inputs:
        if path.exists() and _same(path, other) or path.resolve() == other.resolve() or _inside(path, other):
            raise SWAStreamError(f"{path}: {flag} names an input (or a file inside one); refusing to overwrite it")
    for other in taken:
        if is_stdout(other):
            continue
        if path.resolve() == other.resolve() or _inside(path, other):
            raise SWAStreamError(f"{path}: {flag} names another output ({other}); choose another path")
    if path.exists() or path.is_symlink():
        mode = os.stat(path).st_mode if path.exists() else 0
        if stat.S_ISDIR(mode):
            raise SWAStreamError(f"{path}: {flag} is a directory; give a file name")
        if not stat.S_ISREG(mode):
            raise SWAStreamError(f"{path}: {flag} exists and is not a regular file; refusing to replace it")
        if looks_like is not None and path.stat().st_size and not looks_like(path):
            raise SWAStreamError(f"{path}: exists and is not a {kind}; refusing to overwrite it "
                                 "(remove it or choose another path)")
    probe_folder(path.parent if str(path.parent) else Path("."), path)
    return path


def probe_folder(folder: Path, target: Path) -> None:
    """Prove that `target` can be created in `folder` by creating (and removing) a file there."""
    if not folder.is_dir():
        raise SWAStreamError(f"{target}: cannot write: no folder {folder}")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise os_problem(target, err) from None


def first_line(path: Path, size: int = 256) -> bytes:
    with open(path, "rb") as f:
        return f.read(size).split(b"\n", 1)[0]


def _remove_stale(path: Path) -> None:
    """Temp files of `path` left by a killed process (its pid is gone): a rerun should not leave them behind."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                stale.unlink()
        except PermissionError:  # alive, someone else's
            pass


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside `path`; on success it is fsynced and renamed over `path`, else removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove_stale(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise os_problem(path, err) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_text(path: str | Path) -> Iterator:
    """A text file handle whose content replaces `path` only once it is complete; for "-", standard output
    (flushed at the end; a reader that leaves early raises BrokenPipeError, which the CLI ends quietly)."""
    if is_stdout(path):
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                yield f
        except OSError as err:
            raise os_problem(path, err) from None
