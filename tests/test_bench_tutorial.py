"""The bench's re-implementation of the TensorFlow NMT tutorial (`app.bench.tutorial`): its text
standardisation on hand-checked strings, its word ids, and its phase end to end at a tiny size (a few
training steps, a tiny vocabulary): trained, exported, reloaded, timed and scored. No timing is
asserted."""

from __future__ import annotations

import dataclasses
import json

import pytest
import tensorflow as tf

from app.bench.host import cpu_description
from app.bench.plan import QUICK_PLAN
from app.bench.report import TutorialReport
from app.bench.tutorial import WordIds, bench_pairs, run_tutorial_phase, standardize, tutorial_vocabularies
from tests.conftest import tiny_overrides


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("¿Qué es esto?", "[START] ¿ que es esto ? [END]"),  # NFKD splits the accent off, then it goes
        ("Y lloró Jesús.", "[START] y lloro jesus . [END]"),
        ("Ñandú", "[START] nandu [END]"),
        ("Hola,  MUNDO!", "[START] hola ,   mundo ! [END]"),  # inner spaces stay: the split drops them
        ("Génesis 1:1 «luz»", "[START] genesis  luz [END]"),  # digits, colons and quotes go
        ("", "[START]  [END]"),
    ],
)
def test_the_tutorials_standardisation(text, expected):
    assert standardize(tf.constant(text)).numpy().decode() == expected


def test_word_ids_map_unknown_words_and_strip_the_markers_and_padding():
    words = WordIds(["", "[UNK]", "[START]", "[END]", ".", "hola"])
    ids = words(tf.constant(["Hola.", "¡Adiós!"]))
    assert ids.to_list() == [[2, 5, 4, 3], [2, 1, 1, 3]]  # "¡" is dropped; "adios" and "!" are unknown
    assert (words.start_id, words.end_id) == (2, 3)
    # as the loop writes them: padding after a sentence's end; one that never ends fills the steps
    text = words.text(tf.constant([[5, 4, 3, 0, 0], [5, 5, 5, 5, 4]], tf.int64))
    assert [line.decode() for line in text.numpy()] == ["hola .", "hola hola hola hola ."]


def test_the_cpu_is_named_with_its_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma avx512f amx_tile\n\n"
    )
    cpu = cpu_description(123.456, cpuinfo)
    assert (cpu.model, cpu.flags, cpu.matmul_peak_gflops) == (
        "AMD EPYC 7B13",
        ["avx2", "fma", "avx512f", "amx_tile"],
        123.5,
    )
    assert cpu_description(1.0, tmp_path / "missing").flags == []


def test_the_tutorial_phase_trains_exports_times_and_scores_a_tiny_model(tmp_path):
    from app.config import load_config

    overrides = tiny_overrides(
        **{"train.max_source_tokens": 40, "train.max_target_tokens": 40, "decode.max_output_tokens": 12}
    )
    config = load_config("bench", overrides)
    sources = {"short": ["Y lloró Jesús.", "Hola."], "long": []}
    data_dir, export_dir = tmp_path / "data", tmp_path / "tutorial"
    from app.data.prepare import prepare_data

    test_file = prepare_data(config, data_dir, log=lambda *_: None).corpus.test
    report = run_tutorial_phase(config, data_dir, QUICK_PLAN, sources, test_file, export_dir)
    assert report.steps == QUICK_PLAN.tutorial_steps and report.units == QUICK_PLAN.tutorial_units
    assert 4 < report.source_vocab <= QUICK_PLAN.tutorial_vocab and report.train_pairs >= 64
    assert report.train_examples_per_s > 0 and report.time_to_first_step_s > 0
    assert list(report.decode) == ["short"]  # empty buckets are skipped
    assert list(report.decode["short"].batches) == ["1", "8", "64", "256"]
    assert report.greedy_b64_sentences_per_s == report.decode["short"].batches["64"].sentences_per_s > 0
    assert report.greedy_b1_p50_ms == report.decode["short"].batches["1"].latency_ms_p50 > 0
    assert report.bleu_sentences == 40 and 0 <= report.bleu <= 100  # the whole test split: under 64
    assert report.cpu.model and report.cpu.matmul_peak_gflops > 0
    # the phase's JSON line reads back to the same report, with its headline figures first
    written = json.loads(json.dumps(report.to_json()))
    assert list(written)[:3] == ["greedy_b64_sentences_per_s", "greedy_b1_p50_ms", "train_examples_per_s"]
    assert TutorialReport.from_json(written) == report
    # the export is the tutorial's: a module whose `translate` takes strings and returns strings
    loaded = tf.saved_model.load(str(export_dir))
    translations = loaded.translate(tf.constant(["Hola.", "Y dijo Dios.", ""]))
    assert translations.dtype == tf.string and translations.shape == [3]
    assert dataclasses.asdict(report)["decode"]["short"]["batches"]["1"]["calls"] == QUICK_PLAN.latency_calls


def test_the_tutorial_vocabularies_come_from_the_whole_train_split(tmp_path):
    from app.config import load_config
    from app.data.prepare import prepare_data
    from app.data.tokenizer import read_lines

    limits = {"train.max_source_tokens": 40, "train.max_target_tokens": 40}
    config = load_config("bench", tiny_overrides(**limits))
    data = prepare_data(config, tmp_path / "data", log=lambda *_: None)
    source_words, target_words = tutorial_vocabularies(data, 100_000)
    longest = tuple(max(read_lines(data.corpus.train_files), key=len).split("\t"))
    # the bench trains on its short pairs only, but the vocabularies hold the long pairs' words too
    assert longest not in bench_pairs(config, data)
    for text, words in zip(longest, (source_words, target_words), strict=True):
        assert set(standardize(tf.constant(text)).numpy().decode().split()) <= set(words)
