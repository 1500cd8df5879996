"""A blocking file lock, so that processes preparing the same files at once prepare them once.

Workers started with the same `--data-dir` (or a user running `attend prepare` twice) would otherwise
write the same splits and tokenizers side by side. The first takes the lock and prepares; the others
wait for it, then find the files up to date and reuse them. `flock` locks go away with their process,
so a killed preparation never leaves a stale lock behind (the lock file itself stays, empty).
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path, what: str, log: Callable[[str], object] = print) -> Iterator[None]:
    """Holds an exclusive `flock` on `path` (created if missing); logs once when it has to wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"Waiting for another process preparing {what} (lock {path}) ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
