"""Back-translation: `attend backtranslate` resumes a killed run without writing a line twice (and,
sampling, draws the same lines as an uninterrupted run), a reverse run writes the source language,
and `attend monolingual` leaves out every verse of the main corpus's dev and test splits."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from app.backtranslate import (
    ExportDecoder,
    RebuiltBeamDecoder,
    backtranslate,
    complete_lines,
    make_decoder,
)
from app.cli import main
from app.config import load_config
from app.data.bible import bible_db_name
from app.data.corpus import prepare_corpus
from app.data.monolingual import monolingual_verses, write_monolingual
from tests.conftest import BIBLE_SAMPLE, tiny_overrides, write_bible_db

PAIRS = [line.split("\t") for line in BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines()]
ENGLISH = [target for _, target in PAIRS[:14]]
SPANISH = [source for source, _ in PAIRS[:14]]


def quiet(*_):
    pass


class FakeDecoder:
    """Marks each translation with its batch, and records which batches it was asked for."""

    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, texts: list[str], batch_index: int) -> list[str]:
        self.batches.append(batch_index)
        return [f"<{text.upper()}> b{batch_index}" for text in texts]


def kill_after(out: Path, complete: int, partial: str = "half a li") -> None:
    """What a run killed while writing line `complete + 1` leaves behind."""
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:complete]) + partial, encoding="utf-8")


def test_a_killed_run_continues_where_it_stopped_and_writes_each_line_once(tmp_path):
    whole, resumed = tmp_path / "whole.tsv", tmp_path / "resumed.tsv"
    lines = ["In the beginning.", "", "God created.", "  ", *ENGLISH]
    first = backtranslate(lines, FakeDecoder(), whole, batch_size=4, log=quiet)
    assert (first.written, first.blank) == (len(lines) - 2, 2)
    backtranslate(lines, FakeDecoder(), resumed, batch_size=4, log=quiet)
    kill_after(resumed, 6)
    decoder = FakeDecoder()
    report = backtranslate(lines, decoder, resumed, batch_size=4, log=quiet)
    assert resumed.read_text(encoding="utf-8") == whole.read_text(encoding="utf-8")
    assert (report.resumed_at, report.written, report.lines) == (6, len(lines) - 2 - 6, len(lines) - 2)
    assert decoder.batches == [1, 2, 3]  # batch 0 (lines 1-4) was done; batch 1 is drawn whole again
    targets = [line.split("\t")[1] for line in whole.read_text(encoding="utf-8").splitlines()]
    assert targets == [line for line in lines if line.strip()]
    again = backtranslate(lines, FakeDecoder(), resumed, batch_size=4, log=quiet)
    assert again.written == 0 and resumed.read_text(encoding="utf-8") == whole.read_text(encoding="utf-8")


def test_a_partial_last_line_is_cut_away(tmp_path):
    out = tmp_path / "out.tsv"
    out.write_bytes("a\tb\nc\tdé\nhalf\t".encode())
    assert complete_lines(out) == 2
    assert out.read_bytes() == "a\tb\nc\tdé\n".encode()
    assert complete_lines(tmp_path / "missing.tsv") == 0


def test_an_output_of_another_input_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out.tsv"
    backtranslate(ENGLISH[:6], FakeDecoder(), out, batch_size=4, log=quiet)
    before = out.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 does not pair with non-blank input line 1"):
        backtranslate(ENGLISH[1:9], FakeDecoder(), out, batch_size=4, log=quiet)
    with pytest.raises(ValueError, match="holds 6 lines but the input has only 3"):
        backtranslate(ENGLISH[:3], FakeDecoder(), out, batch_size=4, log=quiet)
    assert out.read_text(encoding="utf-8") == before


# 3 epochs of 59 steps: the tiny model then writes words ("Y Bas Ban, y Ban, y Ben, …"), where 2 of 18
# steps give "i i i" or nothing
REVERSE_TRAINING = {"train.epochs": 3, "train.batch_size": 8}


@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run trained en→es (`data.swap=true` on the es→en fixture), not exported, and its data folder."""
    from app.train import train

    root = tmp_path_factory.mktemp("reverse")
    swapped = {"data.swap": "true", "data.source_language": "en", "data.target_language": "es"}
    overrides = tiny_overrides(**swapped, **REVERSE_TRAINING)
    train(load_config("smoke", overrides), root / "run", root / "data", log=quiet)
    return root / "run", root / "data"


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def test_a_reverse_run_writes_the_source_language(reverse_run, tmp_path):
    run, data_dir = reverse_run
    out = tmp_path / "synthetic.tsv"
    english = [target for _, target in PAIRS[:40]]
    backtranslate(english, RebuiltBeamDecoder(run, 1, data_dir), out, log=quiet)  # greedy
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert [target for _, target in rows] == english
    spanish_words = {word for source, _ in PAIRS for word in words(source)}
    english_words = {word for _, target in PAIRS for word in words(target)}
    written = [word for source, _ in rows for word in words(source)]
    only_spanish = sum(word in spanish_words - english_words for word in written)
    only_english = sum(word in english_words - spanish_words for word in written)
    assert only_spanish > max(20, 2 * only_english), (only_spanish, only_english, rows[:3])


def test_a_resumed_sampling_run_draws_the_same_lines_as_an_uninterrupted_one(trained_run, tmp_path):
    mono = write_lines(tmp_path / "mono.txt", SPANISH)

    def command(out: Path, seed: int = 5) -> str:
        arguments = ["--sample", "--seed", str(seed), "--batch-size", "4"]
        assert main(["backtranslate", str(trained_run), str(mono), "--out", str(out), *arguments]) == 0
        return out.read_text(encoding="utf-8")

    whole = command(tmp_path / "whole.tsv")
    resumed = tmp_path / "resumed.tsv"
    resumed.write_text(whole, encoding="utf-8")
    kill_after(resumed, 5)  # in the middle of the second batch
    assert command(resumed) == whole
    assert [line.split("\t")[1] for line in whole.splitlines()] == SPANISH
    assert command(tmp_path / "other.tsv", seed=6) != whole  # the draws depend on the seed


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_beam_takes_the_exports_search_or_rebuilds_the_run_with_another_width(trained_run, tmp_path):
    export = trained_run / "export"
    searched = make_decoder(trained_run, export, beam=4)  # the run's decode.beam_width
    assert isinstance(searched, ExportDecoder)
    rebuilt = make_decoder(trained_run, export, beam=2)
    assert isinstance(rebuilt, RebuiltBeamDecoder)
    assert len(rebuilt(SPANISH[:3], 0)) == 3
    assert RebuiltBeamDecoder(trained_run, 4, Path("unused"))(SPANISH[:3], 0) == searched(SPANISH[:3], 0)
    with pytest.raises(ValueError, match="not a trained run folder"):
        make_decoder(export, export, beam=2)
    assert (
        main(["backtranslate", str(trained_run), "-", "--out", str(tmp_path / "o.tsv"), "--seed", "1"]) == 2
    )


def bible_data(tmp_path: Path) -> Path:
    """A data folder whose bible.db holds the fixture as `v` and `4`, and Basic English (`3`) worded
    `Basic: <the WEB verse>` (one verse empty), so that each line written names its WEB verse."""
    data_dir = tmp_path / "data"
    write_bible_db(data_dir)
    with sqlite3.connect(data_dir / "cache" / bible_db_name()) as connection:
        rows = connection.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = '4'")
        basic = [("3", book, chapter, verse, f"Basic: {text}") for book, chapter, verse, text in rows]
        basic[0] = (*basic[0][:4], "(MISSING)")
        connection.executemany(
            "INSERT INTO bible (bbName, bNumber, cNumber, vNumber, vText) VALUES (?, ?, ?, ?, ?)", basic
        )
    connection.close()
    return data_dir


def test_monolingual_verses_leave_out_every_dev_and_test_verse(tmp_path):
    data_dir = bible_data(tmp_path)
    config = load_config("smoke", ["data.dev_size=40", "data.test_size=40"])
    out = tmp_path / "mono.txt"
    assert main(["monolingual", "--bible", "3", "--out", str(out), "--data-dir", str(data_dir),
                 "--preset", "smoke", "data.dev_size=40", "data.test_size=40"]) == 0  # fmt: skip
    corpus = prepare_corpus(config, data_dir, log=quiet)
    held = {
        line.split("\t")[1] for split in (corpus.dev, corpus.test) for line in split.read_text().splitlines()
    }
    train = {line.split("\t")[1] for line in corpus.train.read_text(encoding="utf-8").splitlines()}
    written = [line.removeprefix("Basic: ") for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(held) > 50 and not held & set(written)
    assert train - {PAIRS[0][1]} <= set(written)  # every train verse is kept (but the empty one)
    references = {reference for reference, _ in monolingual_verses(config, data_dir, "3", log=quiet)}
    by_reference = {f"1:{i // 100 + 1}:{i % 100 + 1}": target for i, (_, target) in enumerate(PAIRS)}
    assert references and not {by_reference[reference] for reference in references} & held
    report = write_monolingual(config, data_dir, "3", out, log=quiet)
    assert (report.verses, report.empty) == (len(written), 1)
    assert report.verses + report.held_out + report.empty == len(PAIRS)


def test_monolingual_refuses_another_language_and_a_corpus_that_is_no_bible(tmp_path):
    data_dir = bible_data(tmp_path)
    with pytest.raises(ValueError, match="needs text in the main corpus's target language"):
        list(monolingual_verses(load_config("smoke"), data_dir, "v", log=quiet))
    with pytest.raises(ValueError, match="data.corpus=bible"):
        list(monolingual_verses(load_config("smoke", tiny_overrides()), data_dir, "3", log=quiet))
