"""Progress bars: on stderr, drawn on a terminal and nowhere else (ATTEND_PROGRESS overrides), and
never a change to what the commands compute or print on stdout."""

from __future__ import annotations

import io
import os
import pty
import select
import sys

import pytest

from app.cli import main
from app.data.corpus import RawPair, spool_pairs
from app.data.tokenizer import fit_tokenizers
from app.evaluate import TRANSLATE_BATCH, evaluate_run
from app.progress import ENVIRONMENT_VARIABLE, progress, shows_progress
from app.run import RunDir
from app.scoring import read_references
from app.translate import translate_sentences
from app.translator import load_translator
from tests.conftest import BIBLE_SAMPLE


class FakeStream(io.StringIO):
    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.fixture(autouse=True)
def automatic(monkeypatch):
    """Each test starts without the override a developer's shell may set."""
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)


def test_bar_is_drawn_on_a_terminal_and_nowhere_else():
    for terminal in (True, False):
        stream = FakeStream(terminal)
        assert shows_progress(stream) is terminal
        assert list(progress(range(3), unit="lines", stream=stream)) == [0, 1, 2]
        assert ("3/3" in stream.getvalue()) is terminal
        assert terminal or stream.getvalue() == ""
    assert not shows_progress(object())  # no isatty at all: no bar
    with open(os.devnull, "w") as closed:
        pass
    assert not shows_progress(closed)  # isatty raises ValueError


def test_a_real_terminal_gets_the_bar_and_a_pipe_does_not():
    controller, terminal_fd = pty.openpty()
    reader, writer = os.pipe()
    with open(terminal_fd, "w") as terminal, open(writer, "w") as pipe, open(reader) as piped:
        assert shows_progress(terminal) and not shows_progress(pipe)
        for stream in (terminal, pipe):
            with progress(total=5, description="work", stream=stream) as bar:
                bar.update(5)
        pipe.close()
        assert piped.read() == ""
        drawn = b""
        while select.select([controller], [], [], 1)[0]:
            drawn += os.read(controller, 4096)
            if b"5/5" in drawn:
                break
        assert b"work" in drawn and b"5/5" in drawn
    os.close(controller)


def test_the_environment_forces_bars_off_or_on(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "0")
    assert not shows_progress(FakeStream(True))
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    stream = FakeStream(False)
    assert shows_progress(stream)
    list(progress([1, 2], stream=stream))
    assert "2/2" in stream.getvalue()
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "maybe")  # anything else: decided by the stream
    assert shows_progress(FakeStream(True)) and not shows_progress(FakeStream(False))
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    off = FakeStream(True)
    list(progress([1, 2], stream=off, enabled=False))  # a caller that knows better wins
    assert off.getvalue() == ""


def test_the_default_stream_is_stderr_at_call_time(monkeypatch, capsys):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    with progress(total=2, unit="pairs") as bar:
        bar.update(2)
    captured = capsys.readouterr()
    assert captured.out == "" and "2/2" in captured.err and "pairs" in captured.err


def test_corpus_reading_counts_lines_on_stderr_and_keeps_its_log_lines(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("app.data.corpus.PROGRESS_EVERY", 2)
    records = [RawPair(number, f"uno {number}", f"one {number}") for number in range(1, 6)]
    quiet: list[str] = []
    (tmp_path / "quiet").mkdir()
    spool, tally = spool_pairs(iter(records), 100, 1, tmp_path / "quiet", log=quiet.append)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    shown: list[str] = []
    (tmp_path / "shown").mkdir()
    spooled, counted = spool_pairs(iter(records), 100, 1, tmp_path / "shown", log=shown.append)
    assert counted == tally and spooled.keys.tolist() == spool.keys.tolist() and len(spool.keys) == 5
    drawn = capsys.readouterr().err
    assert "Reading the corpus: 0 lines" in drawn and "lines/s" in drawn  # a stream: count, rate
    assert [line for line in shown if line.startswith("  read ")] == [
        "  read 2 lines (2 pairs kept so far)",
        "  read 4 lines (4 pairs kept so far)",
    ]


def test_sentencepiece_fitting_logs_its_time_and_nothing_of_the_trainer(tmp_path, capfd):
    settings = {
        "source_vocab_size": 400,
        "target_vocab_size": 400,
        "model_type": "unigram",
        "character_coverage": 1.0,
        "max_training_sentences": None,
    }
    messages: list[str] = []
    fit_tokenizers(BIBLE_SAMPLE, tmp_path / "vocab", settings, log=messages.append)
    assert messages[0] == "Training the source SentencePiece model (400 pieces) ..."
    assert messages[1].startswith("  done in ") and messages[1].endswith(" pieces)")
    assert messages[2].startswith("Training the target") and messages[3].startswith("  done in ")
    captured = capfd.readouterr()
    assert "trainer_interface" not in captured.err and "unigram_model_trainer" not in captured.err


@pytest.mark.slow
def test_translate_shows_progress_on_stderr_and_only_translations_on_stdout(trained_run, monkeypatch, capsys):
    sentences = ["Y lloró Jesús.", "En el principio era el Verbo.", "Dios es amor."]
    plain = list(translate_sentences(trained_run, sentences, batch_size=2))
    assert capsys.readouterr().err == ""  # stderr is no terminal here

    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    assert main(["translate", str(trained_run), *sentences]) == 0
    captured = capsys.readouterr()
    assert captured.out == "".join(f"{translation}\n" for translation in plain)
    assert "3/3" in captured.err and "Translating" in captured.err

    monkeypatch.setattr(sys, "stdin", FakeStream(False))  # piped input: a count, no total
    assert list(translate_sentences(trained_run, iter(sentences), batch_size=2)) == plain
    assert "3 sentences" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", FakeStream(True))  # typed at a terminal: each answer is its own
    assert list(translate_sentences(trained_run, iter(sentences), batch_size=2)) == plain
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_evaluate_shows_progress_per_run_and_translates_as_before(trained_run, tmp_path, monkeypatch, capsys):
    own = tmp_path / "progress-check.tsv"
    own.write_text("\n".join(BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines()[:80]) + "\n", "utf-8")
    sources, _ = read_references(own)  # repeated sources count once, with all their references
    assert len(sources) > TRANSLATE_BATCH  # more than one batch under the bar
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    reports: list[str] = []
    metrics = evaluate_run(trained_run, source_file=own, beam=1, log=reports.append)
    captured = capsys.readouterr()
    assert captured.out == "" and len(reports) == 1  # the report goes to the log, the bar to stderr
    total = metrics["sentences"]
    assert f"{trained_run.name} progress-check-beam1" in captured.err and f"{total}/{total}" in captured.err

    folder = trained_run / "evaluation" / "progress-check-beam1"
    hypotheses = (folder / "hypotheses.txt").read_text(encoding="utf-8").splitlines()
    assert hypotheses == load_translator(RunDir(trained_run), beam_width=1).translate_texts(sources)
