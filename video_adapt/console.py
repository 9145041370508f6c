"""What commands show the user: one line per error instead of a traceback, and no native library noise.

Every entry point in tools/, data_prep/ and `video_adapt.cli` is wrapped by `command`: a `VideoAdaptError`
(bad config key, missing store, unreadable checkpoint or video ...) or a missing/unreadable path becomes
`error: <message>` on stderr and exit code 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Mapping

from video_adapt.errors import VideoAdaptError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def one_line(err: BaseException) -> str:
    """The error's message on one line. An error re-raised from a DataLoader worker carries the worker's
    traceback in its message; only the original message is kept."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def command(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Decorate a command's `main(argv) -> exit code`: user errors become one line on stderr and exit code 2."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except VideoAdaptError as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
        except OSError as err:
            if err.filename is None:  # not about a path the user gave: a bug or the machine, keep the traceback
                raise
            print(f"error: {err.filename}: {err.strerror or one_line(err)}", file=sys.stderr)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        return EXIT_ERROR

    return run


def print_outputs(paths: Mapping[str, str | Path], prefix: str = "") -> None:
    """Every output file a command wrote, one `name: path` line each, so users can find them."""
    for name, path in paths.items():
        print(f"{prefix}{name}: {path}")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null for the duration of the block.

    decord logs `[time] .../video_reader.cc:83: ERROR opening: ...` through its C++ logger for every file it
    cannot open (`decord.logging.set_level` only quiets FFmpeg's own log), while we raise a one-line
    `VideoDecodeError` for the same file.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
