"""Decoding over a per-batch shortlist (`decode.shortlist`): the lexical table it is drawn from,
the candidate list, the shortlisted step, and translations through the translator and the CLI."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest
import sentencepiece
import tensorflow as tf

from app import translator as translator_module
from app.data.corpus import prepared_train_files
from app.data.lexicon import LexicalTable, _likeliest_translations, build_lexical_table
from app.evaluate import evaluate_run
from app.export import export_run
from app.models.seq2seq import Seq2SeqDecoding, build_model
from app.models.shortlist import shortlist_candidates
from app.run import RunDir
from app.special_tokens import FIRST_PIECE_ID
from app.translator import load_translator, reload_and_translate

SENTENCES = ["Y lloró Jesús.", "En el principio crió Dios los cielos y la tierra.", "Hola", ""]


def test_translations_rank_target_pieces_by_dice_and_pad_with_zeros():
    """Source piece 5 co-occurs 3 times with 9 (in 3 sentences each) and 3 times with 4, which is in
    all 10 sentences: Dice 1.0 against 6/13, so the specific 9 ranks first. Source piece 6 co-occurs
    with one piece only and is padded with 0; the reserved target id 2 is never a translation."""
    target_size = 10
    pairs = {(5, 9): 3, (5, 4): 3, (5, 2): 3, (6, 7): 1}
    codes = np.array([source * target_size + target for source, target in pairs])
    together = np.array(list(pairs.values()), float)
    source_sentences = np.zeros(8, np.int64)
    source_sentences[[5, 6]] = [3, 1]
    target_sentences = np.zeros(target_size, np.int64)
    target_sentences[[2, 4, 7, 9]] = [10, 10, 1, 3]
    table = _likeliest_translations(codes, together, source_sentences, target_sentences, per_source=2)
    assert table.shape == (8, 2) and table.dtype == np.int32
    assert table[5].tolist() == [9, 4]
    assert table[6].tolist() == [7, 0]
    assert not table[[0, 1, 2, 3, 4, 7]].any()


@pytest.mark.slow
def test_lexical_table_of_a_trained_run_holds_frequent_pieces_and_translations(trained_run):
    run = RunDir(trained_run)
    train_files = prepared_train_files(trained_run.parent / "data" / run.config().corpus_name)
    table = build_lexical_table(train_files, run.vocab_dir, frequent=30, per_source=5)
    target = sentencepiece.SentencePieceProcessor(model_file=str(run.vocab_dir / "target.model"))
    source = sentencepiece.SentencePieceProcessor(model_file=str(run.vocab_dir / "source.model"))
    lines = [line.split("\t") for line in train_files[0].read_text(encoding="utf-8").splitlines()]
    counts = np.bincount(np.concatenate(target.encode([pair[1] for pair in lines])), minlength=400)
    counts[:FIRST_PIECE_ID] = 0
    assert table.frequent.tolist() == np.argsort(-counts, kind="stable")[:30].tolist()
    assert table.translations.shape == (source.get_piece_size(), 5)
    # whole words of the 400-piece vocabularies find their translations first
    for spanish, english in (("▁Jehová", "▁Yahweh"), ("▁hijo", "▁son")):
        assert target.id_to_piece(int(table.translations[source.piece_to_id(spanish), 0])) == english


def test_candidates_are_sorted_unique_and_keep_reserved_ids_at_their_positions():
    translations = np.zeros((20, 3), np.int32)
    translations[5] = [30, 31, 0]
    translations[6] = [31, 32, 33]
    translations[7] = [40, 41, 42]  # piece 7 is in no source: its translations stay out
    source_ids = tf.constant([[5, 6, 2], [6, 2, 0]])
    candidates = shortlist_candidates(
        source_ids, tf.constant(translations), tf.constant([12, 10, 30], tf.int32)
    )
    assert candidates.numpy().tolist() == [0, 1, 2, 3, 10, 12, 30, 31, 32, 33]


def test_shortlisted_step_gives_the_full_step_s_logits_of_its_candidates():
    keras.utils.set_random_seed(3)
    decoding = Seq2SeqDecoding(
        build_model(50, 40, embedding_dim=8, units=8, attention_units=8, readout_units=8)
    )
    state = decoding.encode(tf.constant([[5, 6, 7, 2], [8, 9, 2, 0]]))
    candidates = tf.constant([0, 1, 2, 3, 10, 11, 25, 39])
    logits, new_state = decoding.shortlisted_step(candidates)(tf.constant([4, 6]), state)  # ids 10 and 25
    full_logits, full_state = decoding.step(tf.constant([10, 25]), state)
    np.testing.assert_allclose(logits, tf.gather(full_logits, candidates, axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state["states"][0], full_state["states"][0], rtol=1e-6)


def _table_without(translator, leave_out: set[int], vocab_size: int) -> LexicalTable:
    """A lexical table whose candidates are every id but `leave_out` (all frequent, no translations)."""
    frequent = [i for i in range(FIRST_PIECE_ID, vocab_size) if i not in leave_out]
    return LexicalTable(np.array(frequent, np.int32), np.zeros((vocab_size, 1), np.int32))


@pytest.mark.slow
def test_greedy_over_a_shortlist_holding_its_choices_translates_like_the_whole_vocabulary(
    trained_run, monkeypatch
):
    """Positions map back to ids: with ids left out that the full search never picks (so positions
    and ids differ), the greedy translations are the same, and each score, renormalised over fewer
    tokens, is at least the full one."""
    run, data_dir = RunDir(trained_run), trained_run.parent / "data"
    full = load_translator(run, beam_width=1)  # referenced: tf.function holds it weakly
    result = full.search(full.source_ids(tf.constant(SENTENCES)))
    chosen = set(result.tokens.numpy().ravel().tolist())
    vocab_size = full.target_tokenizer.vocab_size
    leave_out = {i for i in range(FIRST_PIECE_ID, vocab_size) if i not in chosen}
    leave_out = set(sorted(leave_out)[::2])  # every other unchosen id: positions shift all along
    monkeypatch.setattr(
        translator_module,
        "build_lexical_table",
        lambda *args, **kwargs: _table_without(full, leave_out, vocab_size),
    )
    short = load_translator(run, beam_width=1, shortlist=True, data_dir=data_dir)
    want, got = full.translate(tf.constant(SENTENCES)), short.translate(tf.constant(SENTENCES))
    assert got["translation"].numpy().tolist() == want["translation"].numpy().tolist()
    assert (got["score"].numpy() >= want["score"].numpy() - 1e-5).all()
    assert (got["score"].numpy() > want["score"].numpy() + 1e-6).any()  # the left-out mass is gone


@pytest.mark.slow
@pytest.mark.parametrize("beam_width", [1, 4])
def test_a_shortlist_of_the_whole_vocabulary_decodes_exactly_as_without(trained_run, monkeypatch, beam_width):
    run, data_dir = RunDir(trained_run), trained_run.parent / "data"
    full = load_translator(run, beam_width=beam_width)
    monkeypatch.setattr(
        translator_module,
        "build_lexical_table",
        lambda *args, **kwargs: _table_without(full, set(), full.target_tokenizer.vocab_size),
    )
    short = load_translator(run, beam_width=beam_width, shortlist=True, data_dir=data_dir)
    for signature in ("translate", "translate_with_attention"):
        want = getattr(full, signature)(tf.constant(SENTENCES))
        got = getattr(short, signature)(tf.constant(SENTENCES))
        assert got["translation"].numpy().tolist() == want["translation"].numpy().tolist()
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-4, atol=1e-4)
    if beam_width > 1:
        want, got = (
            full.translate_nbest(tf.constant(SENTENCES)),
            short.translate_nbest(tf.constant(SENTENCES)),
        )
        assert got["translations"].numpy().tolist() == want["translations"].numpy().tolist()


@pytest.mark.slow
def test_shortlisted_export_reloads_alone_and_evaluate_scores_it_beside_the_full_one(trained_run, tmp_path):
    """`attend export --shortlist` and `attend evaluate --shortlist`: the export carries its table and
    translates in a fresh process with tensorflow + tensorflow_text alone (save_translator's check and
    this test's); its model card says so; evaluate writes its results beside the full vocabulary's."""
    run_copy = tmp_path / "run"
    shutil.copytree(trained_run, run_copy, ignore=shutil.ignore_patterns("export", "evaluation"))
    data_dir = trained_run.parent / "data"
    export_run(run_copy, log=lambda *_: None, shortlist=True, data_dir=data_dir)
    card = json.loads((run_copy / "export" / "model_card.json").read_text())
    reloaded = reload_and_translate(run_copy / "export", SENTENCES)
    in_process = load_translator(RunDir(run_copy), shortlist=True, data_dir=data_dir)
    decode = RunDir(run_copy).config().decode
    held = {"frequent": len(in_process.shortlist.frequent.numpy()), "per_source": decode.shortlist_per_source}
    assert card["export"]["shortlist"] == held  # what the table holds
    assert 0 < held["frequent"] <= decode.shortlist_frequent
    assert reloaded["translation"] == [
        t.decode() for t in in_process.translate(tf.constant(SENTENCES))["translation"].numpy()
    ]
    loaded = tf.saved_model.load(str(run_copy / "export"))
    for saved, built in zip(loaded.shortlist, in_process.shortlist, strict=True):  # frequent, translations
        np.testing.assert_array_equal(saved.numpy(), built.numpy())

    metrics = evaluate_run(run_copy, "test", 1, data_dir=data_dir, log=lambda *_: None, shortlist=True)
    assert metrics["shortlist"] is True
    assert (run_copy / "evaluation" / "test-beam1-shortlist" / "hypotheses.txt").is_file()
    with pytest.raises(ValueError, match="learns its table from the train split"):
        load_translator(RunDir(run_copy), shortlist=True, data_dir=tmp_path / "nowhere")
