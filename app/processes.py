"""Fresh Python processes that answer with one JSON line: the export's reload check and the
benchmark's phases each need a clean interpreter (imports, memory peak, precision policy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_python_for_json(arguments: list[str], what: str, stdin: str | None = None) -> dict:
    """`python ARGUMENTS…`; returns the JSON of its last stdout line, or raises with its stderr."""
    completed = subprocess.run(
        [sys.executable, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])
