"""The server's settings: where it listens, how often it polls, its request limits and TF
Serving's batching knobs (same names and meanings; also read from TF Serving's own
`--batching_parameters_file` text format)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's `BatchingParameters`.

    Args:
        max_batch_size: the most sentences merged into one SavedModel call; a request with more
            is split into several (TF Serving's large-batch splitting).
        batch_timeout_micros: how long the oldest request of an unfilled batch may wait for
            others (0: a batch runs as soon as a batch thread is free; requests that arrive
            meanwhile still merge).
        max_enqueued_batches: batches that may wait; a request that finds the queue full is
            refused at once with UNAVAILABLE (HTTP 503), never left to hang.
        num_batch_threads: batches run at once.
        allowed_batch_sizes: if given, batches are padded up to the next of these (ascending,
            the last equal to `max_batch_size`), so the model sees few distinct shapes.
    """

    max_batch_size: int = 64
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 64
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be at least 0, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] != self.max_batch_size):
            raise ValueError(
                f"allowed_batch_sizes must ascend, each at least 1, and end with max_batch_size "
                f"({self.max_batch_size}); got {list(sizes)}"
            )


# One parameter of the text format: `name { value: N }`, or `allowed_batch_sizes: N` (repeated).
_PARAMETER = re.compile(r"\s*(?:(\w+)\s*\{\s*value\s*:\s*(-?\d+)\s*\}|allowed_batch_sizes\s*:\s*(-?\d+))\s*")


def read_batching_file(path: Path, defaults: BatchingOptions | None = None) -> BatchingOptions:
    """A TF Serving batching parameters file (protobuf text format, `#` comments), e.g.

    max_batch_size { value: 64 }
    batch_timeout_micros { value: 2000 }
    allowed_batch_sizes: 16
    allowed_batch_sizes: 64
    """
    text = re.sub(r"#[^\n]*", "", Path(path).read_text())
    scalars = {f.name for f in dataclasses.fields(BatchingOptions)} - {"allowed_batch_sizes"}
    values: dict = {}
    sizes: list[int] = []
    position = 0
    while position < len(text.rstrip()):
        match = _PARAMETER.match(text, position)
        if not match:
            line = text.count("\n", 0, position) + 1
            raise ValueError(
                f"{path}:{line}: cannot read {text[position:].strip().splitlines()[0]!r}; expected "
                "'max_batch_size { value: 64 }' or 'allowed_batch_sizes: 64'"
            )
        name, value, size = match.groups()
        if size is not None:
            sizes.append(int(size))
        elif name in scalars:
            values[name] = int(value)
        else:
            raise ValueError(
                f"{path}: unknown batching parameter {name!r} (known: {', '.join(sorted(scalars))})"
            )
        position = match.end()
    if sizes:
        values["allowed_batch_sizes"] = tuple(sizes)
    return dataclasses.replace(defaults or BatchingOptions(), **values)


@dataclass(frozen=True)
class Limits:
    """What one request may carry; each answered with a 4xx naming its flag when exceeded."""

    max_body_bytes: int = 1 << 20
    max_instances: int = 256
    max_sentence_chars: int = 2000


@dataclass(frozen=True)
class ServeOptions:
    model_base: Path
    model_name: str
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    poll_seconds: float = 2.0
    batching: BatchingOptions | None = field(default_factory=BatchingOptions)  # None: off
    limits: Limits = field(default_factory=Limits)
    grpc_threads: int = 64
    drain_seconds: float = 30.0
