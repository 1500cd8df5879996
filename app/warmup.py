"""Warm-up records: TF Serving's `assets.extra/tf_serving_warmup_requests`, written into every export
and replayed by a server before a version answers its first request.

A loaded SavedModel is slow on its first calls: each signature's functions are instantiated and
optimised on first use, and with `--xla` every new padded (batch, source length) shape compiles.
TF Serving's "SavedModel Warmup" convention moves that cost before the version goes AVAILABLE: a
TFRecord file of `PredictionLog` protos (`predict_log` holding a `PredictRequest`), at most 1,000,
each replayed once. Stock TF Serving replays it; `attend serve` replays it the same way
(`read_warmup_requests`, `replay`: tensorflow and the tensorflow-serving protos only).

The requests are built from the staged export's own SignatureDefs, so a signature added later is
covered as soon as its inputs can be made from their specs: `[batch]` strings get short real
sentences, `[batch, length]` integers named `*ids` get ids (the source tokenizer's ids for
`source_ids`, small valid ids otherwise); anything else is skipped, and logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from app.special_tokens import END_ID

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"  # TF Serving's name and place
MAX_RECORDS = 1000  # TF Serving refuses a file with more (kMaxNumRecordsInWarmupFile)
BATCH = 8  # sentences in the one request per signature of an export without compiled shapes
SMALL_IDS = (4, 5, 6)  # the first ids after the reserved ones: valid in every vocabulary


@dataclass(frozen=True)
class WarmupRequest:
    """One replayable request: a signature and its inputs as arrays."""

    signature_name: str
    inputs: dict[str, np.ndarray]


# === Writing (at export) ===
def write_warmup_requests(
    export_dir: Path,
    source_ids: Callable[[tf.Tensor], tf.Tensor],
    sentences: Sequence[str],
    *,
    model_name: str = "",
    padded_shapes: Iterable[tuple[int, int]] = (),
    xla_max_batch: int | None = None,
    check: Callable[[WarmupRequest], None] | None = None,
    log=print,
) -> list[WarmupRequest]:
    """Writes `export_dir/assets.extra/tf_serving_warmup_requests` and returns its requests.

    Args:
        export_dir: the staged SavedModel (its `saved_model.pb` names the signatures to cover).
        source_ids: the export's tokenization, `[batch]` strings → `[batch, src]` ids (0-padded).
        sentences: short real sentences (the run's dev split), for string inputs.
        model_name: `model_spec.name` of each request (TF Serving does not require it to match).
        padded_shapes: `(batch, padded source length)` pairs the compiled search of
            `serving_default` meets (`padded_shapes`); one request each, so that none compiles
            while serving. `xla_max_batch`: also one request just above it (the uncompiled path).
        check: runs one request per signature before it is kept; a signature whose request
            raises is left out and logged (its inputs were not what it takes).
    """
    sentences = [s for s in sentences if s.strip()] or ["Hola."]
    signatures = read_signature_defs(export_dir)
    requests: list[WarmupRequest] = []
    for name, signature in signatures.items():
        inputs = synthesised_inputs(signature, sentences[:BATCH], source_ids)
        if inputs is None:
            log(f"Warm-up: signature {name!r} skipped (its inputs cannot be made from their specs)")
            continue
        request = WarmupRequest(name, inputs)
        if check is not None:
            try:
                check(request)
            except Exception as error:  # noqa: BLE001  (a signature we cannot warm is left cold, not fatal)
                log(f"Warm-up: signature {name!r} skipped ({type(error).__name__}: {error})")
                continue
        requests.append(request)
    shapes = list(padded_shapes)
    if shapes and "serving_default" in signatures:
        texts = texts_by_padded_length(source_ids, sentences, {length for _, length in shapes})
        if missing := sorted({length for _, length in shapes} - set(texts)):
            log(f"Warm-up: no text pads to source lengths {missing}; those shapes stay cold")
        requests += [
            WarmupRequest("serving_default", {"text": _strings(_cycled(texts[length], batch))})
            for batch, length in shapes
            if length in texts
        ]
        if xla_max_batch:
            above = _cycled(sentences, xla_max_batch + 1)
            requests.append(WarmupRequest("serving_default", {"text": _strings(above)}))
    if len(requests) > MAX_RECORDS:
        raise ValueError(f"{len(requests)} warm-up requests; TF Serving replays at most {MAX_RECORDS}")
    path = export_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            writer.write(prediction_log(request, model_name).SerializeToString())
    return requests


def write_translator_warmup(
    export_dir: Path,
    translator,
    sentences: Sequence[str],
    *,
    xla_max_batch: int | None,
    min_length: int,
    max_input_tokens: int,
    model_name: str = "",
    log=print,
) -> list[WarmupRequest]:
    """`write_warmup_requests` for a Translator's staged export: one request per signature, each run
    once in this process first (`translator.signatures()`), and with a compiled search
    (`xla_max_batch`: its largest batch) every padded shape it meets, from `min_length` up to the
    padded `max_input_tokens`."""
    functions = translator.signatures()

    def check(request: WarmupRequest) -> None:
        if request.signature_name in functions:
            tensors = {key: tf.constant(value) for key, value in request.inputs.items()}
            functions[request.signature_name](**tensors)

    shapes = padded_shapes(xla_max_batch, min_length, max_input_tokens) if xla_max_batch else []
    return write_warmup_requests(
        export_dir,
        translator.source_ids,
        sentences,
        model_name=model_name,
        padded_shapes=shapes,
        xla_max_batch=xla_max_batch,
        check=check,
        log=log,
    )


def dev_sentences(dev_file: Path, count: int = 64) -> list[str]:
    """The first `count` sources of a prepared dev split (`source TAB target` lines), the warm-up's
    sentences; [] where it is not there (an export away from its prepared corpus)."""
    try:
        with Path(dev_file).open(encoding="utf-8") as lines:
            return [line.split("\t")[0] for _, line in zip(range(count), lines, strict=False)]
    except OSError:
        return []


def padded_shapes(max_batch: int, min_length: int, max_input_tokens: int) -> list[tuple[int, int]]:
    """Every `(batch, source length)` the compiled search of an `--xla` export pads to: powers of two
    up to `max_batch` sentences, and from `min_length` up to the padded `max_input_tokens`."""
    batches = _powers_of_two(1, max_batch)
    lengths = _powers_of_two(min_length, max(_power_of_two_at_least(max_input_tokens), min_length))
    return [(batch, length) for batch in batches for length in lengths]


def texts_by_padded_length(
    source_ids: Callable[[tf.Tensor], tf.Tensor], sentences: Sequence[str], lengths: set[int]
) -> dict[int, list[str]]:
    """For each padded source length L, texts of L/2 < tokens ≤ L (any up to L for the shortest):
    prefixes of the sentences run together, so lengths no single sentence has are reached too."""
    words = " ".join(sentences).split()
    longest = max(lengths)
    while words and len(words) < 2 * longest:
        words += words
    prefixes = [" ".join(words[:count]) for count in range(1, min(len(words), 2 * longest) + 1)]
    counts = tf.reduce_sum(tf.cast(source_ids(tf.constant(prefixes)) != 0, tf.int32), axis=1).numpy()
    shortest = min(lengths)
    found: dict[int, list[str]] = {}
    for length in sorted(lengths):
        low = 0 if length == shortest else length // 2
        fitting = [text for text, count in zip(prefixes, counts, strict=True) if low < count <= length]
        if not fitting and length == longest:  # inputs are cut at max_input_tokens: the longest fits
            fitting = prefixes[-1:]
        if fitting:
            found[length] = fitting
    return found


def synthesised_inputs(
    signature: meta_graph_pb2.SignatureDef, sentences: Sequence[str], source_ids
) -> dict[str, np.ndarray] | None:
    """Inputs for `signature` made from its TensorSpecs, or None where one cannot be made."""
    inputs = {}
    for key, info in signature.inputs.items():
        rank = None if info.tensor_shape.unknown_rank else len(info.tensor_shape.dim)
        if info.dtype == types_pb2.DT_STRING and rank in (0, 1):
            inputs[key] = _strings(sentences) if rank == 1 else np.array(sentences[0].encode(), dtype=object)
        elif info.dtype in (types_pb2.DT_INT32, types_pb2.DT_INT64) and rank == 2 and key.endswith("ids"):
            if key == "source_ids":
                ids = source_ids(tf.constant(list(sentences))).numpy()
            else:
                ids = np.tile([*SMALL_IDS, END_ID], (len(sentences), 1))
            inputs[key] = ids.astype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
        else:
            return None
    return inputs


def prediction_log(request: WarmupRequest, model_name: str = "") -> prediction_log_pb2.PredictionLog:
    """`request` as TF Serving's warm-up record: a PredictionLog holding a PredictRequest."""
    predict = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=request.signature_name)
    )
    for key, value in request.inputs.items():
        predict.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict))


# === Reading and replaying (at serve) ===
def read_warmup_requests(export_dir: Path) -> list[WarmupRequest]:
    """The warm-up requests of a SavedModel folder ([] without the file); ValueError for a record
    that is not a predict request, or more than TF Serving's 1,000."""
    path = Path(export_dir) / WARMUP_FILE
    if not path.is_file():
        return []
    requests = []
    for number, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
        if number >= MAX_RECORDS:
            raise ValueError(f"{path} holds more than {MAX_RECORDS} warm-up records")
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        kind = entry.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(
                f"{path}: record {number} is a {kind}, not a predict_log (attend serve predicts only)"
            )
        request = entry.predict_log.request
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        requests.append(WarmupRequest(request.model_spec.signature_name or "serving_default", inputs))
    return requests


def replay(requests: Sequence[WarmupRequest], call: Callable[[str, dict[str, np.ndarray]], object]) -> float:
    """Runs each request once through `call(signature_name, inputs)`; returns the seconds taken.
    An error propagates: a version whose warm-up fails is not served (as in TF Serving)."""
    started = time.monotonic()
    for request in requests:
        call(request.signature_name, request.inputs)
    return time.monotonic() - started


def read_signature_defs(export_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The serving signatures of a SavedModel folder, by name (the init op left out)."""
    saved_model = saved_model_pb2.SavedModel.FromString((Path(export_dir) / "saved_model.pb").read_bytes())
    graph = saved_model.meta_graphs[0]
    return {
        name: graph.signature_def[name] for name in sorted(graph.signature_def) if not name.startswith("__")
    }


def _strings(texts: Sequence[str]) -> np.ndarray:
    return np.array([text.encode("utf-8") for text in texts], dtype=object)


def _cycled(items: Sequence[str], count: int) -> list[str]:
    return [items[index % len(items)] for index in range(count)]


def _powers_of_two(low: int, high: int) -> list[int]:
    value, values = _power_of_two_at_least(low), []
    while value <= high:
        values.append(value)
        value *= 2
    return values


def _power_of_two_at_least(value: int) -> int:
    return 1 << max(value - 1, 0).bit_length()
