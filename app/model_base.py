"""`ModelBase`: a TensorFlow Serving model base, `BASE/NAME/<integer version>/`, each version a
full SavedModel. `attend export --model-base` publishes into it, `attend serve` and stock
`tensorflow_model_server --model_base_path=BASE/NAME` serve from it.

Only folders named by a decimal integer are versions (TF Serving's rule), so the staging folder
of an export in progress (`BASE/NAME/<N>.staging`) is invisible to every server until it is
renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections.abc import Iterator
from pathlib import Path

from app.config import Config

# A model name is one path segment a URL can carry unescaped: it cannot climb out of the base.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def check_model_name(name: str) -> str:
    """`name` if it is a valid model name; ValueError naming the rule otherwise."""
    if not MODEL_NAME.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (at most 128, "
            "starting with a letter or digit)"
        )
    return name


def default_model_name(config: Config) -> str:
    """The name a run is published and served under unless told otherwise: its language pair."""
    return f"{config.data.source_language}-{config.data.target_language}"


def is_version_name(name: str) -> bool:
    """Whether a folder name is a version number, as TF Serving reads them (decimal, no sign)."""
    return name.isascii() and name.isdigit() and len(name) <= 18


class ModelBase:
    """One model's folder in a model base.

    Args:
        base: the model base (`--model-base`), holding one folder per model name.
        name: the model's name (checked: one safe path segment).
    """

    def __init__(self, base: Path | str, name: str):
        self.base = Path(base)
        self.name = check_model_name(name)
        self.path = self.base / name

    def __str__(self) -> str:
        return str(self.path)

    def versions(self) -> list[int]:
        """The published versions, ascending: integer-named folders holding a SavedModel."""
        if not self.path.is_dir():
            return []
        return sorted(
            int(child.name)
            for child in self.path.iterdir()
            if is_version_name(child.name) and any((child / file).is_file() for file in SAVED_MODEL_FILES)
        )

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_dir(self, version: int) -> Path:
        return self.path / str(version)

    @contextlib.contextmanager
    def next_version(self) -> Iterator[tuple[int, Path]]:
        """Holds the model's publishing lock and yields the next version number and its folder.

        The caller writes the folder atomically (staged, then renamed into place) before the
        lock is released, so that two exports into one base never take the same number.
        Numbers are never reused: the next one follows the highest integer-named folder, even
        one that holds no SavedModel."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".publish.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # waits: exports into one base take turns
            taken = [int(child.name) for child in self.path.iterdir() if is_version_name(child.name)]
            version = max(taken, default=0) + 1
            yield version, self.version_dir(version)
