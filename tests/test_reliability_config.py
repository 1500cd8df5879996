"""Bad settings as a user meets them on the command line: `attend` stops at once with exit status 2
and one line naming the setting, before it creates anything (no data folder, no run folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.config import load_config
from tests.test_cli import attend_here


def prepare(tmp_path, *arguments: str):
    """`attend prepare` of the smoke preset into `tmp_path/data`, run from `tmp_path`."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        return attend_here("prepare", "--preset", "smoke", "--data-dir", str(tmp_path / "data"), *arguments)
    finally:
        os.chdir(previous)


def assert_refused(result, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert f"attend prepare: error: {message}\n" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=abc", "train.epochs: expected an integer, got 'abc'"),
        ("train.epochs=1.5", "train.epochs: expected an integer, got 1.5"),
        ("train.learning_rate=fast", "train.learning_rate: expected a number, got 'fast'"),
        ("model.units=-5", "model.units: expected at least 1, got -5"),
    ],
)
def test_a_bad_override_stops_before_anything_is_created(tmp_path, override, message):
    assert_refused(prepare(tmp_path, override), message)
    assert not (tmp_path / "data").exists() and list(tmp_path.iterdir()) == []


def test_a_malformed_preset_file_is_named_with_line_and_column(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("train:\n  epochs: 3\n   batch_size: 2\n")
    result = prepare(tmp_path, "--preset", str(preset))
    assert_refused(result, f"{preset}:3:14: invalid YAML: mapping values are not allowed here")
    assert list(tmp_path.iterdir()) == [preset]


def test_a_preset_file_that_is_a_list_is_refused(tmp_path):
    preset = tmp_path / "list.yaml"
    preset.write_text("- train\n- model\n")
    result = prepare(tmp_path, "--preset", str(preset))
    assert_refused(
        result,
        f"{preset}: expected a mapping of config sections (data, tokenizer, model, train, decode), "
        "got a list",
    )
    assert list(tmp_path.iterdir()) == [preset]


def test_learning_rates_in_exponent_notation_are_numbers():
    assert load_config("smoke", ["train.learning_rate=1e-4"]).train.learning_rate == 1e-4
