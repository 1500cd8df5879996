"""The bench's `tutorial` phase: TensorFlow's "Neural machine translation with attention" tutorial
(tensorflow/text, `docs/tutorials/nmt_with_attention.ipynb`) re-implemented, trained on the bench's
pairs, exported, and measured with the same harness as Attend's exports in the same run, so that
every "× the tutorial" of the report is a ratio on one CPU.

What is the tutorial's: its text standardisation (`standardize`: NFKD, ASCII lowercase, only
`[a-z .?!,¿]` kept, punctuation split off, `[START]`/`[END]` added), word vocabularies of at most
5,000 entries built by `TextVectorization` (`""` the padding, `[UNK]` the unknown word), a
bidirectional GRU encoder of 256 units summed, a decoder of embedding → GRU (zero initial state) →
single-head `MultiHeadAttention` over the encoder's outputs with a residual add and layer norm →
a dense layer to the vocabulary, the masked loss and accuracy, Adam at Keras's defaults, batches of
64; and its export: a `tf.Module` whose `translate` takes a batch of strings and returns strings
through the dynamic greedy loop (every sentence stays in the batch, emitting padding once ended,
until all have ended or the step limit is reached).

What is the bench's: the pairs (the train split's pairs within the bench's token limits, those
Attend's training rows and decoding model use; the vocabularies are adapted on the whole train
split, as the tutorial adapts them on all its text and Attend's pieces are trained), batches
that are always full (shuffled, repeated, then batched, so each step is 64 examples as
`steady_state_rate` counts), the step limit of the loop (Attend's `decode.max_output_tokens`), and
the sizes of `--quick` (`BenchPlan.tutorial_units`, `tutorial_vocab`).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from app.bench.decoding import bleu_on_test, decode_speed, format_speed_rows
from app.bench.host import CPU_FLAGS, cpu_description, matmul_peak_gflops, peak_rss_mb
from app.bench.plan import BenchPlan
from app.bench.report import TutorialReport
from app.bench.training import StepTimer, steady_state_rate

START, END = "[START]", "[END]"
BATCH_SIZE = 64


def standardize(text: tf.Tensor) -> tf.Tensor:
    """The tutorial's standardisation of a string tensor: accents split off by NFKD and then dropped
    with everything else outside `[a-z .?!,¿]` (after ASCII lowercasing), each of `.?!,¿` spaced out,
    the ends stripped, and the start and end markers added."""
    import tensorflow_text

    text = tensorflow_text.normalize_utf8(text, "NFKD")
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, "[^ a-z.?!,¿]", "")
    text = tf.strings.regex_replace(text, "[.?!,¿]", r" \0 ")
    text = tf.strings.strip(text)
    return tf.strings.join([START, text, END], separator=" ")


def vocabulary(sentences: list[str], max_tokens: int) -> list[str]:
    """The tutorial's vocabulary of one side: `TextVectorization` adapted on its sentences (padding
    `""` at 0, `[UNK]` at 1, then words by frequency), at most `max_tokens` entries."""
    vectorizer = keras.layers.TextVectorization(max_tokens=max_tokens, standardize=standardize, ragged=True)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(sentences).batch(BATCH_SIZE))
    return [str(word) for word in vectorizer.get_vocabulary()]


class WordIds(tf.Module):
    """Strings → standardised word ids (ragged) and ids → text, over one side's vocabulary, as the
    tutorial's `TextVectorization` and `StringLookup(invert=True)` do; plain TensorFlow ops, so that
    the SavedModel needs nothing else."""

    def __init__(self, words: list[str]):
        super().__init__()
        self.words, self.size = tf.constant(words), len(words)
        initializer = tf.lookup.KeyValueTensorInitializer(self.words, tf.range(len(words), dtype=tf.int64))
        self.table = tf.lookup.StaticHashTable(initializer, default_value=1)  # [UNK]
        self.start_id, self.end_id = words.index(START), words.index(END)

    def __call__(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return tf.ragged.map_flat_values(self.table.lookup, tf.strings.split(standardize(texts)))

    def text(self, ids: tf.Tensor) -> tf.Tensor:
        """The tutorial's `tokens_to_text`: words joined by spaces, the markers and padding stripped."""
        joined = tf.strings.reduce_join(tf.gather(self.words, ids), axis=-1, separator=" ")
        joined = tf.strings.regex_replace(joined, r"^ *\[START\] *", "")
        return tf.strings.regex_replace(joined, r" *\[END\] *$", "")


class Encoder(keras.layers.Layer):
    def __init__(self, vocab_size: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(vocab_size, units, mask_zero=True)
        gru = keras.layers.GRU(units, return_sequences=True, recurrent_initializer="glorot_uniform")
        self.rnn = keras.layers.Bidirectional(gru, merge_mode="sum")

    def call(self, tokens):
        return unmasked(self.rnn(self.embedding(tokens), mask=tokens != 0))  # the decoder masks by ids


class CrossAttention(keras.layers.Layer):
    """Single-head attention of the decoder's GRU outputs over the encoder's, added back and normalised."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # the query's padding mask passes through, as in the tutorial
        self.mha = keras.layers.MultiHeadAttention(num_heads=1, key_dim=units)
        self.layernorm = keras.layers.LayerNormalization()
        self.add = keras.layers.Add()

    def call(self, x, context, context_mask):
        attended = self.mha(query=x, value=context, attention_mask=context_mask[:, tf.newaxis, :])
        return self.layernorm(self.add([x, attended]))


class Decoder(keras.layers.Layer):
    def __init__(self, vocab_size: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.embedding = keras.layers.Embedding(vocab_size, units, mask_zero=True)
        self.rnn = keras.layers.GRU(
            units, return_sequences=True, return_state=True, recurrent_initializer="glorot_uniform"
        )
        self.attention = CrossAttention(units)
        self.output_layer = keras.layers.Dense(vocab_size)

    def call(self, context, context_mask, tokens, state=None):
        """Logits of each next word and the GRU's last state (a zero state when `state` is None)."""
        x, state = self.rnn(self.embedding(tokens), initial_state=state, mask=tokens != 0)
        return self.output_layer(self.attention(x, context, context_mask)), state


class TutorialModel(keras.Model):
    """The tutorial's `Translator` model: (source ids, target input ids) → logits, teacher-forced."""

    def __init__(self, source_vocab: int, target_vocab: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.encoder = Encoder(source_vocab, units)
        self.decoder = Decoder(target_vocab, units)

    def call(self, inputs):
        source, target_in = inputs
        logits, _ = self.decoder(self.encoder(source), source != 0, target_in)
        # as the tutorial deletes it: a mask on the logits would make Keras weight the masked loss again
        return unmasked(logits)


def unmasked(tensor):
    """`tensor` without the padding mask Keras attached to it."""
    if getattr(tensor, "_keras_mask", None) is not None:
        del tensor._keras_mask
    return tensor


def masked_loss(y_true, y_pred):
    """Cross-entropy averaged over the real (non-padding) target words of the batch."""
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    mask = tf.cast(y_true != 0, loss.dtype)
    return tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)


def masked_accuracy(y_true, y_pred):
    match = tf.cast(tf.cast(tf.argmax(y_pred, axis=-1), y_true.dtype) == y_true, tf.float32)
    mask = tf.cast(y_true != 0, tf.float32)
    return tf.reduce_sum(match * mask) / tf.reduce_sum(mask)


class TutorialTranslator(tf.Module):
    """The tutorial's export: `translate(strings) → strings`, greedy, with its dynamic loop."""

    def __init__(self, model: TutorialModel, source: WordIds, target: WordIds, max_length: int):
        super().__init__()
        self.model, self.source, self.target, self.max_length = model, source, target, max_length

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def translate(self, texts):
        tokens = self.source(texts).to_tensor()
        context, context_mask = self.model.encoder(tokens), tokens != 0
        batch = tf.shape(tokens)[0]
        next_token = tf.fill([batch, 1], tf.constant(self.target.start_id, tf.int64))
        done = tf.zeros([batch, 1], tf.bool)
        state = tf.zeros([batch, self.model.decoder.units])
        outputs = tf.TensorArray(tf.int64, size=1, dynamic_size=True)
        for step in tf.range(self.max_length):
            logits, state = self.model.decoder(context, context_mask, next_token, state)
            next_token = tf.argmax(logits, axis=-1)
            done = done | (next_token == self.target.end_id)
            next_token = tf.where(done, tf.constant(0, tf.int64), next_token)
            outputs = outputs.write(step, next_token)
            if tf.reduce_all(done):
                break
        return self.target.text(tf.transpose(outputs.stack()[:, :, 0]))


class WordCounter:
    """Counts the tutorial's output words for `decode_speed`'s target tokens/s (Attend's exports are
    counted in their SentencePiece pieces by the same harness)."""

    def tokenize(self, outputs):
        return tf.strings.split(tf.constant(outputs, tf.string))


def bench_pairs(config, data) -> list[tuple[str, str]]:
    """The train split's pairs within the bench's token limits: the pairs Attend trains on."""
    from app.data.prepare import token_lengths
    from app.data.tokenizer import read_lines

    limits = config.train.max_source_tokens, config.train.max_target_tokens
    lengths = zip(*token_lengths(data.corpus.train_files, data.vocab_dir), strict=True)
    lines = read_lines(data.corpus.train_files)
    return [
        tuple(line.split("\t"))
        for line, (source, target) in zip(lines, lengths, strict=True)
        if source <= limits[0] and target <= limits[1]
    ]


def tutorial_vocabularies(data, max_tokens: int) -> tuple[list[str], list[str]]:
    """Each side's vocabulary adapted on the whole train split: on the bench's few short pairs alone
    it would hold a few hundred words, a smaller output layer than the tutorial's 5,000."""
    from app.data.tokenizer import read_side

    return tuple(
        vocabulary(list(read_side(data.corpus.train_files, column)), max_tokens) for column in (0, 1)
    )


def train_batches(pairs: list[tuple[str, str]], source: WordIds, target: WordIds, seed: int):
    """((source ids, target input ids), target output ids), 64 pairs a batch, padded per batch."""

    def ids(sources, targets):
        target_ids = target(targets)
        return (source(sources).to_tensor(), target_ids[:, :-1].to_tensor()), target_ids[:, 1:].to_tensor()

    sources, targets = (list(side) for side in zip(*pairs, strict=True))
    dataset = tf.data.Dataset.from_tensor_slices((sources, targets))
    dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True).repeat()
    return dataset.batch(BATCH_SIZE).map(ids, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def run_tutorial_phase(
    config, data_dir: Path, plan: BenchPlan, sources: dict[str, list[str]], test_file: Path, export_dir: Path
) -> TutorialReport:
    """Trains the tutorial's model for `plan.tutorial_steps` on the bench's pairs (examples/s over
    the same windows as Attend's rows), exports it to `export_dir`, reloads it, times it on each
    bucket of `sources`, and scores it on `test_file`."""
    from app.data.prepare import prepare_data

    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config, data_dir, log=lambda *_: None)
    pairs = bench_pairs(config, data)
    source, target = (WordIds(words) for words in tutorial_vocabularies(data, plan.tutorial_vocab))
    peak = matmul_peak_gflops()
    model = TutorialModel(source.size, target.size, plan.tutorial_units)
    model.compile(optimizer="adam", loss=masked_loss, metrics=[masked_accuracy])
    timer = StepTimer()
    batches = train_batches(pairs, source, target, config.train.seed)
    model.fit(batches, epochs=1, steps_per_epoch=plan.tutorial_steps, callbacks=[timer], verbose=0)
    examples_per_s = steady_state_rate(timer.ends, plan, BATCH_SIZE)

    translator = TutorialTranslator(model, source, target, config.decode.max_output_tokens)
    tf.saved_model.save(translator, str(export_dir), signatures={"serving_default": translator.translate})
    loaded = tf.saved_model.load(str(export_dir))  # timed as a serving program would run it

    def serve(text):
        return {"translation": loaded.translate(text)}

    decode = {
        bucket: decode_speed(serve, sentences, plan, WordCounter())
        for bucket, sentences in sources.items()
        if sentences
    }
    bleu, scored = bleu_on_test(
        lambda batch: [text.decode() for text in loaded.translate(tf.constant(batch)).numpy()],
        test_file,
        plan.bleu_sentences,
    )
    return TutorialReport(
        train_examples_per_s=round(examples_per_s, 1),
        bleu=bleu,
        bleu_sentences=scored,
        cpu=cpu_description(peak),
        steps=plan.tutorial_steps,
        train_pairs=len(pairs),
        time_to_first_step_s=round(timer.ends[0] - timer.started, 2),
        parameters=int(model.count_params()),
        source_vocab=source.size,
        target_vocab=target.size,
        units=plan.tutorial_units,
        decode=decode,
        peak_rss_mb=round(peak_rss_mb(), 1),
    )


def format_tutorial(tutorial: TutorialReport) -> list[str]:
    """The tutorial's part of the table: the CPU, its training row, its decode rows as Attend's."""
    cpu = tutorial.cpu
    flags = ", ".join(f"{flag} {'yes' if flag in cpu.flags else 'no'}" for flag in CPU_FLAGS)
    lines = [
        f"CPU: {cpu.model} ({flags}); float32 matmul peak {cpu.matmul_peak_gflops:,.0f} GFLOP/s",
        f"the TensorFlow tutorial's model (GRU {tutorial.units}, vocabularies {tutorial.source_vocab:,} / "
        f"{tutorial.target_vocab:,} words, {tutorial.parameters:,} parameters), trained {tutorial.steps} "
        f"steps on {tutorial.train_pairs:,} pairs: {tutorial.train_examples_per_s:,.0f} examples/s, first "
        f"step {tutorial.time_to_first_step_s:.1f} s; BLEU {tutorial.bleu:.2f} on "
        f"{tutorial.bleu_sentences:,} test sentences",
    ]
    for bucket, row in tutorial.decode.items():
        lines += format_speed_rows(f"tutorial_{bucket}", row)
    return lines
