"""The one error type users see.

The CLI prints a `SWAStreamError` as a single line (`swa-stream: error: <message>`) and exits 2;
anything else is a bug and keeps its traceback.
"""


class SWAStreamError(Exception):
    """A problem with the user's input (a file, a config, an argument), stated in one line."""


class ConfigError(SWAStreamError, ValueError):
    """An invalid configuration value. The message starts with the field's name."""


def printable(text: str) -> str:
    """`text` with a file name's bytes that are not UTF-8 (Python's surrogate escapes) shown as \\xNN: a
    terminal could not print them, and the error line itself would fail."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def stdin_at_most_once(paths) -> None:
    """Refuse "-" (standard input) among `paths` more than once: a stream can be read only once."""
    if sum(str(p) == "-" for p in paths) > 1:
        raise SWAStreamError("-: given more than once; standard input can be read only once")
