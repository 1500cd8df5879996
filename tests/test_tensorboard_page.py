"""The TensorBoard page a person reads, in headless Chromium: docs/tensorboard_screenshot.py draws the
Custom Scalars landing charts of a trained run and saves them at the requested size."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "docs" / "tensorboard_screenshot.py"


def load_script():
    spec = importlib.util.spec_from_file_location("tensorboard_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's header (its IHDR chunk comes first)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
def test_custom_scalars_page_draws_the_landing_charts(request, tmp_path):
    screenshot_script = load_script()
    missing = screenshot_script.missing_browser_parts()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; `make screenshot` installs them")
    trained_run = request.getfixturevalue("trained_run")  # trained only when the browser is there
    out = tmp_path / "tensorboard.png"

    text = screenshot_script.screenshot(trained_run / "logs", out, "custom_scalars", width=1000, height=700)

    assert png_size(out) == (1000, 700)
    assert "loss: train and dev" in text
    assert "dev BLEU, and the kept checkpoint's" in text
