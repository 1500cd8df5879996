"""Every code block marked ```python runnable in the README and the serving page runs, as written, in
a fresh interpreter on a trained export (its path put in place of the example path)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.run import RunDir
from app.translator import load_translator

ROOT = Path(__file__).parents[1]
# The README shows one signature; the serving page shows the others.
PAGES = (ROOT / "README.md", ROOT / "docs" / "serving.md")
EXAMPLE_EXPORT = re.compile(r"models/[\w.-]+/export")


def page_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python runnable\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def runnable_blocks() -> list[str]:
    return [block for page in PAGES for block in page_blocks(page)]


def run_block(code: str, export: Path, folder: Path) -> subprocess.CompletedProcess:
    """The block in a fresh interpreter started in `folder`, with none of this project importable."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        [sys.executable, "-I", "-c", EXAMPLE_EXPORT.sub(str(export), code)],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_docs_have_a_runnable_block_per_signature():
    blocks = runnable_blocks()
    assert any('signatures["serving_default"]' in block for block in page_blocks(PAGES[0]))  # the README's
    for signature in (
        "serving_default",
        "translate_with_attention",
        "translate_ids",
        "translate_with_alignment",
        "score",
        "sample",
        "complete",
    ):
        assert any(f'signatures["{signature}"]' in block for block in blocks), signature


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_each_runnable_readme_block_runs(trained_run, tmp_path, index):
    block = runnable_blocks()[index]
    completed = run_block(block, trained_run / "export", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    if "translate_with_attention" in block:
        assert (tmp_path / "attention.png").read_bytes().startswith(b"\x89PNG")
    if "translate_ids" in block:  # the caller's own preprocessing gives the greedy translations
        greedy = load_translator(RunDir(trained_run), beam_width=1)
        for translation in greedy.translate_texts(["Y lloró Jesús.", "  Hola,\u00a0mundo. "]):
            assert repr(translation.encode()) in completed.stdout, completed.stdout
