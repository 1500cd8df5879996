"""`Servable`: one loaded version of a model — its signatures as TF Serving describes them
(the SignatureDefs of `saved_model.pb`), requests checked against them, and the calls, batched
where the signature allows it.

Any SavedModel with signatures is served; nothing here knows Attend's models. Loading needs
`tensorflow_text` imported (the SentencePiece ops), as in any program that loads our exports.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops the exports' tokenizers need)
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from app.serve.batching import BatchScheduler
from app.serve.errors import from_tensorflow, invalid_argument
from app.serve.options import BatchingOptions, Limits
from app.warmup import read_warmup_requests, replay

DEFAULT_SIGNATURE = "serving_default"
Arrays = dict[str, np.ndarray]


def read_signature_defs(directory: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of a SavedModel's serving graph, as TF Serving reports them."""
    saved_model = saved_model_pb2.SavedModel()
    if (directory / "saved_model.pb").is_file():
        saved_model.ParseFromString((directory / "saved_model.pb").read_bytes())
    else:
        text_format.Parse((directory / "saved_model.pbtxt").read_text(encoding="utf-8"), saved_model)
    graphs = saved_model.meta_graphs
    graph = next((g for g in graphs if "serve" in g.meta_info_def.tags), graphs[0])
    return {
        name: graph.signature_def[name]
        for name in sorted(graph.signature_def)
        if name != "__saved_model_init_op"
    }


def _batch_rows_only(signature: meta_graph_pb2.SignatureDef) -> bool:
    """Whether every input and output is one value per row (`[batch]`): then requests can merge
    into one call and split back exactly, whatever their neighbours."""
    tensors = [*signature.inputs.values(), *signature.outputs.values()]
    return all(not t.tensor_shape.unknown_rank and len(t.tensor_shape.dim) == 1 for t in tensors)


class Servable:
    """A SavedModel version, loaded and ready to answer.

    Args:
        name, version: what requests address it by.
        directory: the version's folder (`BASE/NAME/<version>`).
        batching: TF Serving's batching knobs, or None to call the model once per request.
        limits: what one request may carry.
        on_batch: called with each merged batch's size (metrics).
    """

    def __init__(
        self,
        name: str,
        version: int,
        directory: Path,
        batching: BatchingOptions | None,
        limits: Limits,
        on_batch=None,
    ):
        self.name, self.version, self.directory, self.limits = name, version, Path(directory), limits
        self.signature_defs = read_signature_defs(self.directory)
        self._loaded = tf.saved_model.load(str(self.directory), tags=["serve"])
        self._functions = dict(self._loaded.signatures)
        self._schedulers = {
            signature: BatchScheduler(
                lambda inputs, signature=signature: self._call(signature, inputs),
                batching,
                on_batch,
                name=f"{name}-{version}-{signature}",
            )
            for signature, definition in self.signature_defs.items()
            if batching is not None and _batch_rows_only(definition)
        }
        # unbatched calls run here, off the REST event loop and beside each other as in TF Serving
        self._unbatched = ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"{name}-{version}-call")
        self._in_flight = 0
        self._idle = threading.Condition()

    # === Requests ===
    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """The metadata TF Serving's GetModelMetadata returns under "signature_def"."""
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in self.signature_defs.items():
            signatures.signature_def[key].CopyFrom(definition)
        return signatures

    def signature(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise invalid_argument(
                f'Serving signature name: "{name}" not found in signature def '
                f"(this model has: {', '.join(self.signature_defs)})"
            )
        return self.signature_defs[name]

    def predict(self, signature_name: str, inputs: Arrays, output_filter: list[str] | None = None) -> Future:
        """Checks `inputs` against the signature and its limits, then runs (batched where it can).

        Raises ServingError for a request that cannot run; the future carries the outputs, or the
        ServingError of a failed call."""
        name = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(name)
        inputs = self._checked_inputs(signature, inputs)
        wanted = self._checked_filter(signature, output_filter)
        if name in self._schedulers:
            future = self._schedulers[name].submit(inputs)
        else:
            future = self._unbatched.submit(self._call, name, inputs)
        return _filtered(future, wanted) if wanted else future

    def _call(self, signature_name: str, inputs: Arrays) -> Arrays:
        tensors = {key: tf.constant(value) for key, value in inputs.items()}
        try:
            outputs = self._functions[signature_name](**tensors)
        except tf.errors.OpError as error:
            raise from_tensorflow(error) from None
        return {key: value.numpy() for key, value in outputs.items()}

    def _checked_inputs(self, signature: meta_graph_pb2.SignatureDef, inputs: Arrays) -> Arrays:
        expected = set(signature.inputs)
        if set(inputs) != expected:
            raise invalid_argument(
                f"expected inputs {sorted(expected)}, got {sorted(inputs)}"
                + (f" (missing: {sorted(expected - set(inputs))})" if expected - set(inputs) else "")
            )
        checked = {key: _as_dtype(key, value, signature.inputs[key]) for key, value in inputs.items()}
        rows = {len(value) for value in checked.values() if value.ndim}  # scalars (a seed) have no rows
        if len(rows) > 1:
            raise invalid_argument(f"inputs have different batch sizes: {sorted(map(str, rows))}")
        count = next(iter(rows), 0) or 0
        if count > self.limits.max_instances:
            raise invalid_argument(
                f"{count} instances in one request; this server takes at most {self.limits.max_instances} "
                "(--max-instances)"
            )
        for key, value in checked.items():
            if value.dtype == object:
                longest = max((len(item.decode("utf-8", "replace")) for item in value.ravel()), default=0)
                if longest > self.limits.max_sentence_chars:
                    raise invalid_argument(
                        f"input {key!r} has a text of {longest} characters; this server takes at most "
                        f"{self.limits.max_sentence_chars} (--max-sentence-chars)"
                    )
        return checked

    @staticmethod
    def _checked_filter(signature: meta_graph_pb2.SignatureDef, output_filter: list[str] | None) -> list[str]:
        unknown = sorted(set(output_filter or ()) - set(signature.outputs))
        if unknown:
            raise invalid_argument(f"output tensor alias not found in signature: {', '.join(unknown)}")
        return list(output_filter or ())

    # === Lifetime ===
    def warm_up(self) -> tuple[int, float]:
        """Replays the version's warm-up records (`assets.extra/tf_serving_warmup_requests`, TF
        Serving's convention) once each, straight to the signatures: the first calls' function
        instantiation and XLA compilations happen here, before the version is served. Returns
        `(requests, seconds)`; raises (ServingError, ValueError) where a record fails."""
        requests = read_warmup_requests(self.directory)
        return len(requests), replay(requests, self._call)

    def acquire(self) -> None:
        with self._idle:
            self._in_flight += 1

    def release(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def unload(self, timeout: float | None = None) -> None:
        """Waits for requests in flight to finish (at most `timeout` seconds), then stops batching."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
        for scheduler in self._schedulers.values():
            scheduler.close()
        self._unbatched.shutdown(wait=True)


def _as_dtype(key: str, value, info: meta_graph_pb2.TensorInfo) -> np.ndarray:
    """`value` as an array of the signature's dtype and rank, or INVALID_ARGUMENT saying why."""
    dtype = tf.dtypes.as_dtype(info.dtype)
    try:
        if info.dtype == types_pb2.DT_STRING:
            array = np.asarray(value, dtype=object)
            if not all(isinstance(item, bytes) for item in array.ravel()):
                raise TypeError("expected strings")
        else:
            array = np.asarray(value)
            if array.dtype == object or (
                dtype.is_integer and array.size and not np.issubdtype(array.dtype, np.integer)
            ):
                raise TypeError(f"expected {dtype.name} numbers")
            if array.dtype == bool and dtype != tf.bool:
                raise TypeError(f"expected {dtype.name} numbers")
            array = array.astype(dtype.as_numpy_dtype)
    except (TypeError, ValueError) as error:
        raise invalid_argument(f"input {key!r}: {error}; the signature takes {dtype.name}") from None
    shape = info.tensor_shape
    if not shape.unknown_rank:
        if array.ndim != len(shape.dim):
            raise invalid_argument(
                f"input {key!r} has rank {array.ndim} (shape {list(array.shape)}); the signature takes rank "
                f"{len(shape.dim)} ({[d.size if d.size >= 0 else None for d in shape.dim]})"
            )
        for axis, dim in enumerate(shape.dim):
            if dim.size >= 0 and array.shape[axis] != dim.size:
                raise invalid_argument(
                    f"input {key!r}: dimension {axis} is {array.shape[axis]}, expected {dim.size}"
                )
    return array


def _filtered(future: Future, wanted: list[str]) -> Future:
    filtered: Future = Future()

    def done(source: Future) -> None:
        if source.exception() is not None:
            filtered.set_exception(source.exception())
        else:
            filtered.set_result({key: source.result()[key] for key in wanted})

    future.add_done_callback(done)
    return filtered
