"""Prefix-constrained decoding (`PrefixConstrained`, the export's `complete` signature): forced through
each sentence's prefix, then searched on; token healing of a prefix cut inside a word; the same output
as `serving_default` for an empty prefix; reached through `attend translate --prefix` and the server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from app.models.decoding import DecodingStrategy, PrefixConstrained, force_prefix
from app.special_tokens import END_ID

VOCAB = 9
SERVING_PAGE = Path(__file__).parents[1] / "docs" / "serving.md"


def table_step(seed: int = 0):
    """step_fn whose logits depend on the fed token and the step, with a mild end bias."""
    table = np.random.default_rng(seed).normal(0, 2, (VOCAB, 16, VOCAB)).astype(np.float32)
    table[:, :, END_ID] += 1.0
    table = tf.constant(table)

    def step(tokens, state):
        logits = tf.gather_nd(table, tf.stack([tokens, tf.minimum(state["position"], 15)], axis=1))
        return logits, {**state, "position": state["position"] + 1}

    return step, table


def replayed_score(table, tokens, length: int) -> float:
    """The model's log-probability of `tokens[:length]`, stepped by hand."""
    fed, total = 1, 0.0
    for position, token in enumerate(tokens[:length]):
        logits = table.numpy()[fed, min(position, 15)]
        total += logits[token] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        fed = token
    return total


def start(prefixes: list[list[int]], **extra) -> dict:
    width = max(1, *map(len, prefixes))
    padded = [row + [0] * (width - len(row)) for row in prefixes]
    return {
        "position": tf.zeros([len(prefixes)], tf.int32),
        "prefix": tf.constant(padded, tf.int32),
        **extra,
    }


STRATEGIES = {"greedy": 1, "beam": 4}


@pytest.mark.parametrize("kind", STRATEGIES)
def test_each_sentence_is_forced_through_its_own_prefix_and_scored_by_the_model(kind):
    step, table = table_step()
    prefixes = [[5, 6, 7, 4], [], [8], [4, 4]]
    strategy = DecodingStrategy.from_settings(STRATEGIES[kind], 0.6, prefix=True)
    assert isinstance(strategy, PrefixConstrained)
    result = strategy.search(step, start(prefixes), tf.fill([4], 12))
    tokens, lengths, scores = (value.numpy() for value in result[:3])
    for row, prefix in enumerate(prefixes):
        assert tokens[row, : len(prefix)].tolist() == prefix
        assert lengths[row] > len(prefix) and tokens[row, lengths[row] - 1] == END_ID
        assert scores[row] == pytest.approx(replayed_score(table, tokens[row], lengths[row]), abs=1e-4)


@pytest.mark.parametrize("kind", STRATEGIES)
def test_an_empty_prefix_decodes_exactly_as_the_strategy_alone(kind):
    step, _ = table_step(3)
    limits = tf.constant([12, 3, 9])
    alone = DecodingStrategy.from_settings(STRATEGIES[kind], 0.6).search(step, start([[], [], []]), limits)
    forced = DecodingStrategy.from_settings(STRATEGIES[kind], 0.6, prefix=True).search(
        step, start([[], [], []]), limits
    )
    np.testing.assert_array_equal(forced.tokens.numpy(), alone.tokens.numpy())
    np.testing.assert_array_equal(forced.lengths.numpy(), alone.lengths.numpy())
    np.testing.assert_array_equal(forced.scores.numpy(), alone.scores.numpy())


@pytest.mark.parametrize("kind", STRATEGIES)
def test_the_step_after_the_prefix_keeps_to_the_allowed_tokens(kind):
    step, _ = table_step(1)
    allowed = np.zeros([2, VOCAB], bool)
    allowed[0, 7] = True  # one choice: token 7
    allowed[1, [4, 6]] = True
    state = start([[5], [6, 6]], prefix_next=tf.constant(allowed))
    strategy = DecodingStrategy.from_settings(STRATEGIES[kind], 0.0, prefix=True)
    tokens = strategy.search(step, state, tf.fill([2], 10)).tokens.numpy()
    assert tokens[0, :2].tolist() == [5, 7]
    assert tokens[1, :2].tolist() == [6, 6] and tokens[1, 2] in (4, 6)


def test_beam_search_over_a_large_vocabulary_keeps_to_real_tokens_while_forced():
    """A vocabulary of 600 takes `search.top_k`'s blocked path, whose padding must never outrank
    the tokens the constraint ruled out."""
    vocab = 600
    table = tf.constant(np.random.default_rng(5).normal(0, 3, (vocab, vocab)).astype(np.float32))

    def step(tokens, state):
        return tf.gather(table, tokens), state

    allowed = np.zeros([1, vocab], bool)
    allowed[0, [598, 599]] = True  # two allowed, fewer than the beam: the rest of the beam ruled out
    state = {"prefix": tf.constant([[597, 5, 597]]), "prefix_next": tf.constant(allowed)}
    result = DecodingStrategy.from_settings(4, 0.6, prefix=True).search(step, state, tf.constant([12]))
    tokens = result.tokens.numpy()[0]
    assert tokens[:3].tolist() == [597, 5, 597] and tokens[3] in (598, 599)
    assert (tokens < vocab).all() and np.isfinite(result.scores.numpy()).all()


def test_force_prefix_masks_only_the_rows_inside_or_just_after_their_prefix():
    scores = tf.zeros([3, 5])
    state = {"prefix": tf.constant([[4, 3], [4, 0], [0, 0]]), "prefix_next": tf.fill([3, 5], False)}
    at_step_1 = force_prefix(scores, tf.constant(1), state).numpy()
    assert np.isfinite(at_step_1[0]).tolist() == [False, False, False, True, False]  # forced: 3
    assert not np.isfinite(at_step_1[1]).any()  # just after its prefix: nothing in `prefix_next`
    assert np.isfinite(at_step_1[2]).all()  # its prefix long done: free


def test_static_shape_searches_refuse_a_prefix():
    with pytest.raises(ValueError, match="dynamic searches only"):
        DecodingStrategy.from_settings(1, 0.6, output_length=8, prefix=True)


# === The export's `complete` signature, on the tiny trained run ===

SENTENCES = ["Y lloró Jesús.", "En el principio crió Dios los cielos y la tierra.", "Hola", ""]


@pytest.fixture(scope="module")
def export(trained_run):
    return tf.saved_model.load(str(trained_run / "export"))


def translator(trained_run, beam_width: int | None = None):
    from app.run import RunDir
    from app.translator import load_translator

    return load_translator(RunDir(trained_run), beam_width=beam_width)


def texts_of(tensor) -> list[str]:
    return [text.decode("utf-8") for text in tensor.numpy()]


@pytest.mark.slow
@pytest.mark.parametrize("beam_width", [1, 4])
def test_an_empty_prefix_gives_serving_default_s_output(trained_run, beam_width):
    model = translator(trained_run, beam_width)
    texts = tf.constant(SENTENCES)
    best = model.translate(texts)
    completed = model.complete(texts, tf.constant([""] * len(SENTENCES)))
    assert texts_of(completed["translation"]) == texts_of(best["translation"])
    np.testing.assert_allclose(completed["score"].numpy(), best["score"].numpy(), rtol=1e-6, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("beam_width", [1, 4])
def test_completions_start_with_their_prefix_and_are_scored_as_forced_decoding(
    trained_run, export, beam_width
):
    model = translator(trained_run, beam_width)
    prefixes = ["And Jesus", "In the beg", "Jes", "and the "]  # whole words, mid-word, a finished word
    out = model.complete(tf.constant(SENTENCES), tf.constant(prefixes))
    translations = texts_of(out["translation"])
    for prefix, translation in zip(prefixes, translations, strict=True):
        assert translation.startswith(prefix.strip()), (prefix, translation)
    # the score: the model's log-probability of all the pieces searched, the forced ones included
    source_ids = model.source_ids(tf.constant(SENTENCES))
    result = model.completion(source_ids, tf.constant(prefixes))
    forced = model.forced_scores(source_ids, result.tokens).numpy().sum(axis=1)
    np.testing.assert_allclose(forced, out["score"].numpy(), atol=1e-4)
    # float32 sums of about a hundred log-probabilities, by two graphs: equal to a millionth of their size
    np.testing.assert_allclose(result.scores.numpy(), out["score"].numpy(), rtol=1e-6, atol=1e-5)


@pytest.mark.slow
def test_a_prefix_cut_inside_a_word_is_token_healed(trained_run):
    """Hand-checkable with the vocabulary itself: "Jes" is forced up to its last piece, and the next
    piece must be one whose text starts with that piece's (so "Jes" can become "Jesus")."""
    model = translator(trained_run)
    tokenizer = model.target_tokenizer
    vocabulary = texts_of(tokenizer.pieces(tf.range(tokenizer.vocab_size)))
    pieces = texts_of(tokenizer.pieces(tokenizer.tokenize(tf.constant(["Jes"]))[0]))
    forced, allowed, lengths = (value.numpy() for value in model.prefix_state(tf.constant(["Jes", "Jes "])))
    assert lengths.tolist() == [len(pieces)] * 2
    # "Jes": all but its last piece forced, the next piece any that extends the last
    assert [vocabulary[i] for i in forced[0] if i] == pieces[:-1]
    expected = {
        piece for piece in vocabulary[4:] if piece.startswith(pieces[-1]) and not piece.startswith("<0x")
    }
    assert {vocabulary[i] for i in np.flatnonzero(allowed[0])} == expected
    assert pieces[-1] in expected
    # "Jes " (a finished word): all its pieces forced, then anything
    assert [vocabulary[i] for i in forced[1] if i] == pieces and allowed[1].all()
    # the search takes them: the forced pieces, then one of the allowed ones
    searched = model.completion(model.source_ids(tf.constant(SENTENCES[:1])), tf.constant(["Jes"]))
    tokens = searched.tokens.numpy()[0]
    assert [vocabulary[i] for i in tokens[: len(pieces) - 1]] == pieces[:-1]
    assert vocabulary[tokens[len(pieces) - 1]] in expected
    out = model.complete(tf.constant(SENTENCES[:1] * 2), tf.constant(["Jes", "Jes "]))
    healed, whole = texts_of(out["translation"])
    assert healed.startswith("Jes") and whole.startswith("Jes")


@pytest.mark.slow
def test_merged_requests_complete_as_each_alone(export):
    """What the server's batching relies on: a sentence's completion does not depend on its batch."""
    prefixes = ["And", "", "In the beg", "Hel"]
    together = export.signatures["complete"](text=tf.constant(SENTENCES), prefix=tf.constant(prefixes))
    for row, (text, prefix) in enumerate(zip(SENTENCES, prefixes, strict=True)):
        alone = export.signatures["complete"](text=tf.constant([text]), prefix=tf.constant([prefix]))
        assert texts_of(alone["translation"]) == texts_of(together["translation"])[row : row + 1]
        assert float(alone["score"][0]) == pytest.approx(float(together["score"][row]), abs=1e-4)


# Runs in a fresh interpreter: `complete` needs nothing but tensorflow and tensorflow_text.
_FRESH = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
assert not any(name == "app" or name.startswith("app.") for name in sys.modules), "imported project code"
signatures = tf.saved_model.load(sys.argv[1]).signatures
texts, prefixes = json.loads(sys.stdin.read())
out = signatures["complete"](text=tf.constant(texts), prefix=tf.constant(prefixes))
print(json.dumps({"translation": [t.decode() for t in out["translation"].numpy()],
                  "score": out["score"].numpy().tolist()}))
"""


@pytest.mark.slow
def test_complete_loads_with_tensorflow_alone_and_asks_for_no_xla(trained_run, export):
    from app.processes import run_python_for_json
    from app.warmup import read_warmup_requests
    from tests.test_export import jit_compiled_functions

    prefixes = ["And", "In the beg", "", "Jes"]
    fresh = run_python_for_json(
        ["-c", _FRESH, str(trained_run / "export")], "the fresh reload", json.dumps([SENTENCES, prefixes])
    )
    here = export.signatures["complete"](text=tf.constant(SENTENCES), prefix=tf.constant(prefixes))
    assert fresh["translation"] == texts_of(here["translation"])
    np.testing.assert_allclose(fresh["score"], here["score"].numpy(), atol=1e-4)
    assert jit_compiled_functions(trained_run / "export") == []
    warmed = [
        request
        for request in read_warmup_requests(trained_run / "export")
        if request.signature_name == "complete"
    ]
    assert len(warmed) == 1 and set(warmed[0].inputs) == {"text", "prefix"}  # `attend serve` warms it too
    with pytest.raises(tf.errors.InvalidArgumentError, match="text and prefix batch sizes differ"):
        export.signatures["complete"](text=tf.constant(["a"]), prefix=tf.constant(["a", "b"]))
    empty = tf.constant([], tf.string)
    assert export.signatures["complete"](text=empty, prefix=empty)["translation"].shape == (0,)


@pytest.mark.slow
def test_attend_translate_prefix(trained_run, export, capsys):
    from app import cli

    assert cli.main(["translate", str(trained_run), "--prefix", "In the beg", *SENTENCES[:2]]) == 0
    printed = capsys.readouterr().out.splitlines()
    out = export.signatures["complete"](
        text=tf.constant(SENTENCES[:2]), prefix=tf.constant(["In the beg"] * 2)
    )
    assert printed == texts_of(out["translation"])
    assert all(line.startswith("In the beg") for line in printed)
    assert cli.main(["translate", str(trained_run), "--prefix", "In", "--align", "Hola"]) == 2
    assert "--align and --prefix cannot be combined" in capsys.readouterr().err


@pytest.mark.slow
def test_the_server_lists_and_answers_complete(trained_run, export, tmp_path):
    from tests.serving import Server, http

    base = tmp_path / "base"
    shutil.copytree(trained_run / "export", base / "es-en" / "1")
    with Server("--model-base", str(base), "--model-name", "es-en", "--poll-seconds", "0") as server:
        url = f"{server.rest}/v1/models/es-en"
        status, metadata = http("GET", f"{url}/metadata")
        assert status == 200
        signature = metadata["metadata"]["signature_def"]["signature_def"]["complete"]
        assert set(signature["inputs"]) == {"text", "prefix"}
        assert set(signature["outputs"]) == {"translation", "score"}
        request = {"signature_name": "complete", "instances": [{"text": SENTENCES[0], "prefix": "And Jes"}]}
        status, answer = http("POST", f"{url}:predict", request)
        assert status == 200, answer
        here = export.signatures["complete"](text=tf.constant(SENTENCES[:1]), prefix=tf.constant(["And Jes"]))
        assert [answer["predictions"][0]["translation"]] == texts_of(here["translation"])
        assert answer["predictions"][0]["translation"].startswith("And Jes")
        if shutil.which("curl"):  # docs/serving.md's example, as written (only the address differs)
            (block,) = re.findall(
                r"^```bash complete\n(.*?)^```", SERVING_PAGE.read_text("utf-8"), re.S | re.M
            )
            command = block.replace("localhost:8501", server.rest.removeprefix("http://"))
            shown = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, check=True, timeout=60
            )
            assert json.loads(shown.stdout) == answer
        assert server.stop() == 0, server.log()
