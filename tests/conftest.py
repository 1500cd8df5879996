"""Shared fixtures: a real (tiny) parallel corpus and one tiny trained run reused across tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIXTURES = Path(__file__).parent / "fixtures"
# 600 short verse pairs, Reina-Valera 1909 → World English Bible (both public domain)
BIBLE_SAMPLE = FIXTURES / "bible-es-en-600.tsv"


def tiny_overrides(tsv: Path = BIBLE_SAMPLE, **extra: object) -> list[str]:
    """`smoke` preset overrides that train on a local TSV (no download) in seconds."""
    values = {
        "data.corpus": "tsv",
        "data.tsv_path": str(tsv),
        "data.dev_size": 40,
        "data.test_size": 40,
        "tokenizer.source_vocab_size": 400,
        "tokenizer.target_vocab_size": 400,
        "train.epochs": 2,
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny trained and exported run (the `train` function end to end), shared by export tests."""
    from app.config import load_config
    from app.train import train

    root = tmp_path_factory.mktemp("trained")
    config = load_config("smoke", tiny_overrides())
    train(config, root / "run", root / "data", log=lambda *_: None)
    return root / "run"
