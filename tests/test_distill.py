"""Sequence-level distillation: `attend distill` writes the teacher's translations of its train split
(resumably, nothing twice), the student trains on them and not on the references (`data.weight=0`),
and the command trains and exports a student that translates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.backtranslate import ExportDecoder, make_decoder
from app.cli import main
from app.config import load_config
from app.data.corpus import normalize_text, prepare_corpus
from app.data.pipeline import token_pairs
from app.data.prepare import prepare_data
from app.data.tokenizer import read_lines
from app.distill import Distillation, write_teacher_outputs
from app.recipe import make_train_set
from app.run import RunDir
from tests.conftest import tiny_overrides

# the student's settings on top of the smoke preset: the fixture's vocabulary, one epoch
STUDENT = ["tokenizer.source_vocab_size=400", "tokenizer.target_vocab_size=400", "train.epochs=1"]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def teacher(trained_run, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the shared trained run (its distill/ folder is this module's) and its data folder."""
    copy = tmp_path_factory.mktemp("teacher") / "run"
    shutil.copytree(trained_run, copy)
    return copy, trained_run.parent / "data"


@pytest.fixture(scope="module")
def distilled(teacher) -> Path:
    """The teacher's beam translations of its train split, written by its export's serving_default."""
    run, data_dir = teacher
    distillation = Distillation.of(run)
    export = RunDir(run).export_dir
    write_teacher_outputs(distillation, lambda: make_decoder(run, export, beam=4), data_dir, log=quiet)
    return distillation.path


def test_the_distilled_file_is_the_teachers_translation_of_each_train_pair(teacher, distilled):
    run, data_dir = teacher
    assert distilled == run / "distill" / "train-beam4.tsv"  # 4: the run's decode.beam_width
    corpus = prepare_corpus(RunDir(run).config(), data_dir, log=quiet)
    sources = [line.split("\t")[0] for line in read_lines(corpus.train_files)]
    rows = [line.split("\t") for line in distilled.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(sources) == corpus.report["splits"]["train"]
    assert [source for source, _ in rows] == sources
    direct = ExportDecoder(RunDir(run).export_dir)(sources[:6], 0)
    assert [target for _, target in rows[:6]] == [normalize_text(text) for text in direct]
    references = [line.split("\t")[1] for line in read_lines(corpus.train_files)]
    assert [target for _, target in rows] != references  # the teacher's words, not the references'


class FakeDecoder:
    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, texts: list[str], batch_index: int) -> list[str]:
        self.batches.append(batch_index)
        return [f"<{text}> b{batch_index}" for text in texts]


def test_a_killed_distillation_resumes_without_writing_a_line_twice(teacher):
    run, data_dir = teacher
    distillation = Distillation(RunDir(run), RunDir(run).config(), beam=2)  # its own file: train-beam2.tsv
    write_teacher_outputs(distillation, FakeDecoder, data_dir, batch_size=100, log=quiet)
    whole = distillation.path.read_text(encoding="utf-8")
    lines = whole.splitlines(keepends=True)
    distillation.path.write_text("".join(lines[:250]) + "half a li", encoding="utf-8")
    decoder = FakeDecoder()
    report = write_teacher_outputs(distillation, lambda: decoder, data_dir, batch_size=100, log=quiet)
    assert distillation.path.read_text(encoding="utf-8") == whole
    assert (report.resumed_at, report.written) == (250, len(lines) - 250)
    assert decoder.batches == list(range(2, (len(lines) + 99) // 100))  # batch 2 drawn whole again

    def never():
        raise AssertionError("a finished file needs no teacher")

    again = write_teacher_outputs(distillation, never, data_dir, batch_size=100, log=quiet)
    assert (again.resumed_at, again.written) == (len(lines), 0)
    distillation.path.write_text("other\tinput\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 does not pair with non-blank input line 1"):
        write_teacher_outputs(distillation, never, data_dir, batch_size=100, log=quiet)


def test_the_student_config_is_the_preset_with_the_teachers_data_and_its_translations(teacher):
    run, _ = teacher
    distillation = Distillation.of(run, beam=2)
    config = distillation.student_config("smoke", 0, ["train.epochs=1", "data.dev_size=40"])
    teacher_config = RunDir(run).config()
    assert (config.name, config.train.epochs, config.model.units) == ("smoke", 1, 32)
    assert config.corpus_name == teacher_config.corpus_name  # the same splits: dev and test references
    assert config.data.weight == 0
    assert [(extra.corpus, extra.tsv_path, extra.weight) for extra in config.data.corpora] == [
        ("tsv", str((run / "distill" / "train-beam2.tsv").resolve()), 1.0)
    ]
    assert distillation.student_config("smoke", 0.5).data.weight == 0.5


def test_weight_0_needs_another_corpus_to_draw_from():
    with pytest.raises(ValueError, match="data.weight=0 leaves nothing to train on.*give data.corpora"):
        load_config("smoke", tiny_overrides(**{"data.weight": 0}))
    with pytest.raises(ValueError, match="data.weight: expected at least 0, got -1"):
        load_config("smoke", tiny_overrides(**{"data.weight": -1}))
    extra = "[{corpus: tsv, tsv_path: a.tsv, weight: 0}]"  # extras keep a weight above 0
    with pytest.raises(ValueError, match=r"data.corpora\[0\].weight: expected greater than 0"):
        load_config("smoke", tiny_overrides(**{"data.corpora": extra}))


def drawn_pairs(config, data, batches: int = 6) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (source ids, target ids with the end) pairs of the first train batches, padding cut."""
    pairs = set()
    for (sources, _), targets in make_train_set(config, data).take(batches):
        for source, target in zip(sources.numpy(), targets.numpy(), strict=True):
            pairs.add((tuple(int(i) for i in source if i), tuple(int(i) for i in target if i)))
    return pairs


def file_pairs(files, data) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The same shape of pairs, tokenized straight from `files`."""
    return {
        (tuple(source.numpy().tolist()), tuple(target.numpy().tolist()[1:]))  # the start marker is an input
        for source, target in token_pairs(files, *data.tokenizers, max_source_tokens=64, max_target_tokens=64)
    }


def test_with_weight_0_every_training_pair_comes_from_the_extra_corpus(tmp_path):
    """The extra file pairs each train source with the next pair's reference: a drawn pair then says
    which corpus it came from."""
    data_dir = tmp_path / "data"
    main_train = prepare_corpus(load_config("smoke", tiny_overrides()), data_dir, log=quiet).train_files
    rows = [line.split("\t") for line in read_lines(main_train)]
    shifted = tmp_path / "shifted.tsv"
    shifted.write_text(
        "".join(f"{source}\t{rows[(i + 1) % len(rows)][1]}\n" for i, (source, _) in enumerate(rows)),
        encoding="utf-8",
    )
    corpora = f"[{{corpus: tsv, tsv_path: {shifted}, weight: 1}}]"
    for weight, only_extra in ((0, True), (1, False)):
        config = load_config("smoke", tiny_overrides(**{"data.weight": weight, "data.corpora": corpora}))
        data = prepare_data(config, data_dir, log=quiet)
        drawn = drawn_pairs(config, data)
        from_extra = drawn & file_pairs(data.extras[0].train_files, data)
        from_main = drawn & file_pairs(data.corpus.train_files, data)
        assert len(drawn) > 100 and from_extra
        assert (from_extra == drawn and not from_main) is only_extra, (weight, len(from_main))


def test_distill_trains_and_exports_a_student_that_translates(teacher, distilled, tmp_path, capsys):
    run, data_dir = teacher
    before = distilled.read_text(encoding="utf-8")
    student = tmp_path / "student"
    arguments = ["--preset", "smoke", "--data-dir", str(data_dir), "--run-dir", str(student), *STUDENT]
    assert main(["distill", str(run), *arguments]) == 0
    assert distilled.read_text(encoding="utf-8") == before  # reused: only the training was done
    pairs = len(before.splitlines())
    assert f"{distilled}: {pairs:,} lines ({pairs:,} there already, 0 written)" in capsys.readouterr().out
    config = RunDir(student).config()
    assert config.data.weight == 0 and config.data.corpora[0].tsv_path == str(distilled.resolve())
    card = json.loads(RunDir(student).model_card_path.read_text(encoding="utf-8"))
    weights = [(row["weight"], row["share"]) for row in card["data"]["corpora"]]
    assert weights == [(0.0, 0.0), (1.0, 1.0)]  # the references only for dev and test
    translations = ExportDecoder(RunDir(student).export_dir)(["Y lloró Jesús.", "Dios es amor."], 0)
    assert len(translations) == 2 and all(isinstance(text, str) for text in translations)
