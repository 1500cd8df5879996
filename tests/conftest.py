"""Shared fixtures: a real (tiny) parallel corpus and one tiny trained run reused across tests."""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIXTURES = Path(__file__).parent / "fixtures"
# 600 short verse pairs, Reina-Valera 1909 → World English Bible (both public domain)
BIBLE_SAMPLE = FIXTURES / "bible-es-en-600.tsv"


def write_bible_db(data_dir: Path, tsv: Path = BIBLE_SAMPLE) -> Path:
    """`data_dir/cache/<the pinned bible.db name>` with the real schema, holding the sample's verses as
    Reina-Valera ('v') and World English ('4'): the `bible` corpus path end to end, without the 73 MB
    download (which `fetch_bible_db` skips when the database is already cached)."""
    from app.data.bible import bible_db_name

    database = data_dir / "cache" / bible_db_name()
    database.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, line in enumerate(tsv.read_text(encoding="utf-8").splitlines()):
        source, target = line.split("\t")[:2]
        reference = (1, index // 100 + 1, index % 100 + 1)  # book, chapter, verse
        rows += [("v", *reference, source), ("4", *reference, target)]
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TABLE bible (id INTEGER PRIMARY KEY, bbName TEXT, bNumber INTEGER, cNumber INTEGER, "
            "vNumber INTEGER, vText TEXT)"
        )
        connection.executemany(
            "INSERT INTO bible (bbName, bNumber, cNumber, vNumber, vText) VALUES (?, ?, ?, ?, ?)", rows
        )
    connection.close()
    return database


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
    """One tiny trained and exported run (the train and export activities), shared by export tests."""
    from app.config import load_config
    from app.export import export_run
    from app.train import train

    root = tmp_path_factory.mktemp("trained")
    config = load_config("smoke", tiny_overrides())
    train(config, root / "run", root / "data", log=lambda *_: None)
    export_run(root / "run", log=lambda *_: None)
    return root / "run"


# The files that take minutes, longest first: `make test`'s workers take whole files in collection
# order, so starting these first keeps one worker from getting a long file at the end.
LONGEST_FILES = (
    "test_readme.py",
    "test_distribute_multi_worker.py",
    "test_reliability.py",
    "test_distribute.py",
    "test_serve_versions.py",
    "test_serve.py",
    "test_backtranslate.py",
    "test_ensemble.py",
    "test_subword_regularisation.py",
    "test_distill.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


# seconds each test file took (setup, call and teardown of its tests, a session fixture counted in the
# first test that used it), summed on the controller from every worker's reports: where the suite's
# time goes, printed after the run
FILE_SECONDS: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    FILE_SECONDS[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if not FILE_SECONDS:
        return
    terminalreporter.write_sep("-", "slowest test files (seconds, summed over their tests)")
    for path, seconds in sorted(FILE_SECONDS.items(), key=lambda item: -item[1])[:20]:
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
    terminalreporter.write_line(f"{sum(FILE_SECONDS.values()):8.1f}  all {len(FILE_SECONDS)} files")
