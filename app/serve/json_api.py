"""TF Serving's REST JSON: a predict request's body to input arrays, output arrays to the
response body, and protos (status, metadata) to JSON, as its api_rest page documents them.

- Row format: `{"signature_name"?, "instances": [...]}` → `{"predictions": [...]}`; an instance
  is an input's value when the signature has one input, else an object of named values.
- Columnar format: `{"signature_name"?, "inputs": value | {name: value}}` → `{"outputs": ...}`.
- A string value may be given as `{"b64": "<base64>"}`. Output strings are text, except outputs
  whose name ends in `_bytes`, which come back as `{"b64": ...}`.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from app.serve.errors import invalid_argument

Arrays = dict[str, np.ndarray]


def parse_request(body: bytes) -> dict:
    """The request's JSON object; INVALID_ARGUMENT for anything else."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise invalid_argument(f"JSON Parse error: {error}") from None
    if not isinstance(request, dict):
        raise invalid_argument("JSON Value is not an object: the body must be a JSON object")
    return request


def signature_name_of(request: dict) -> str:
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    return name


def request_inputs(request: dict, signature: meta_graph_pb2.SignatureDef) -> tuple[Arrays, str]:
    """The input arrays of a predict request and its format (`row` or `columnar`)."""
    if ("instances" in request) == ("inputs" in request):
        raise invalid_argument(
            "Missing 'inputs' or 'instances' key"
            if "instances" not in request
            else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        )
    names = sorted(signature.inputs)
    if "instances" in request:
        return _row_inputs(request["instances"], names, signature), "row"
    return _columnar_inputs(request["inputs"], names, signature), "columnar"


def _row_inputs(instances, names: list[str], signature) -> Arrays:
    if not isinstance(instances, list):
        raise invalid_argument("Expecting 'instances' to be a list/array")
    named = bool(instances) and all(isinstance(item, dict) and "b64" not in item for item in instances)
    if not named:
        if len(names) != 1:
            raise invalid_argument(f"each instance must be an object with the inputs {names}")
        return {names[0]: _array(instances, signature.inputs[names[0]].dtype, names[0])}
    columns: Arrays = {}
    for name in names:
        missing = [index for index, item in enumerate(instances) if name not in item]
        if missing:
            raise invalid_argument(f"instance {missing[0]} is missing the input {name!r}")
        columns[name] = _array([item[name] for item in instances], signature.inputs[name].dtype, name)
    extra = sorted({key for item in instances for key in item} - set(names))
    if extra:
        raise invalid_argument(f"unknown inputs {extra}; the signature takes {names}")
    return columns


def _columnar_inputs(inputs, names: list[str], signature) -> Arrays:
    if isinstance(inputs, dict) and "b64" not in inputs:
        extra = sorted(set(inputs) - set(names))
        if extra:
            raise invalid_argument(f"unknown inputs {extra}; the signature takes {names}")
        return {name: _array(value, signature.inputs[name].dtype, name) for name, value in inputs.items()}
    if len(names) != 1:
        raise invalid_argument(f"'inputs' must be an object with the inputs {names}")
    return {names[0]: _array(inputs, signature.inputs[names[0]].dtype, names[0])}


def _array(value, dtype: int, name: str) -> np.ndarray:
    """A nested JSON list as an array; strings (and b64 objects) as bytes for string inputs."""
    shape = _shape(value, name)
    flat = list(_flatten(value))
    if dtype == types_pb2.DT_STRING:
        items = [_bytes(item, name) for item in flat]
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(shape)
    wrong = next((item for item in flat if not isinstance(item, (int, float))), None)
    if wrong is not None:
        raise invalid_argument(f"input {name!r}: expected numbers, got {wrong!r}")
    return np.array(flat).reshape(shape) if flat else np.zeros(shape)


def _shape(value, name: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    shapes = {_shape(item, name) for item in value}
    if len(shapes) > 1:
        raise invalid_argument(f"input {name!r}: lists of different lengths (a tensor must be rectangular)")
    return (len(value), *next(iter(shapes), ()))


def _flatten(value):
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _bytes(item, name: str) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, dict) and set(item) == {"b64"} and isinstance(item["b64"], str):
        try:
            return base64.b64decode(item["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument(f"input {name!r}: invalid base64 in {item['b64'][:40]!r}") from None
    raise invalid_argument(f'input {name!r}: expected a string or {{"b64": ...}}, got {item!r}')


def response_body(outputs: Arrays, format: str) -> dict:
    """`{"predictions": ...}` (row) or `{"outputs": ...}` (columnar), as TF Serving writes them."""
    names = sorted(outputs)
    values = {name: _json_value(outputs[name], name) for name in names}
    if format == "columnar":
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    rows = {len(values[name]) for name in names}
    if len(rows) > 1:
        raise invalid_argument("outputs have different batch sizes; use the columnar 'inputs' format")
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{name: values[name][row] for name in names} for row in range(rows.pop())]}


def _json_value(array: np.ndarray, name: str):
    if array.dtype == object:
        if name.endswith("_bytes"):
            convert = lambda item: {"b64": base64.b64encode(item).decode("ascii")}  # noqa: E731
        else:
            convert = lambda item: item.decode("utf-8", "replace")  # noqa: E731
        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def proto_json(message) -> dict:
    """A proto as TF Serving prints it: field names as in the .proto, default values included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
