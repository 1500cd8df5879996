"""Progress bars for the long commands (evaluate, compare, translate, corpus reading).

Bars go to stderr so that stdout stays the data (`attend translate RUN < in.txt > out.txt`), and
they show only when a person is watching: when the stream is a terminal. Piped, redirected or in
CI, nothing is drawn and logs stay clean. `ATTEND_PROGRESS=0` turns bars off everywhere (a user who
wants a quiet terminal), `ATTEND_PROGRESS=1` turns them on even where the stream is no terminal
(tests, or a log file that should hold them); unset or any other value: automatic.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

from tqdm import tqdm

ENVIRONMENT_VARIABLE = "ATTEND_PROGRESS"


def shows_progress(stream: TextIO | None = None) -> bool:
    """Whether a bar written to `stream` (default: the current stderr) is drawn."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    unit: str = "sentences",
    description: str | None = None,
    stream: TextIO | None = None,
    leave: bool = True,
    enabled: bool | None = None,
) -> tqdm:
    """A tqdm bar on `stream` (default: the current stderr): count, rate, and ETA when `total` (or
    the iterable's length) is known; a disabled bar, which passes items through and ignores
    updates, when `shows_progress(stream)` is False.

    Use it around an iterable (`for line in progress(lines, unit="lines")`) or by hand
    (`with progress(total=n) as bar: … bar.update(k)`). Before printing to a terminal while a bar
    is open, `bar.clear()`, then `bar.refresh()` after, so that the two do not share a line."""
    stream = sys.stderr if stream is None else stream
    return tqdm(
        iterable,
        total=total,
        unit=f" {unit}",  # "12 sentences", "40.5 sentences/s" (tqdm writes "12it")
        desc=description,
        file=stream,
        leave=leave,
        disable=not (shows_progress(stream) if enabled is None else enabled),
    )
