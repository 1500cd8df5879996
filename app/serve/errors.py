"""Errors as TensorFlow Serving reports them: a TF error code, its HTTP status on the REST API
(the mapping of TF Serving's http_server.cc) and its gRPC status code (same names)."""

from __future__ import annotations

import re

import tensorflow as tf

HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# tf.errors.OpError.error_code (an int) → its name
_TF_CODE_NAMES = {getattr(tf.errors, name): name for name in HTTP_STATUS}


class ServingError(Exception):
    """A request that cannot be answered, with the TF error code that says why.

    Args:
        code: a TF error code name (`INVALID_ARGUMENT`, `NOT_FOUND`, `UNAVAILABLE`, …).
        message: what a client can act on.
        http_status: overrides the code's HTTP status (413 for a body over the limit).
    """

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.http_status = http_status or HTTP_STATUS[code]


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


def from_tensorflow(error: tf.errors.OpError) -> ServingError:
    """A TensorFlow runtime error (a graph assertion on bad input, …) as TF Serving reports it:
    its code, and of a failed assertion only its message (not the graph's node names)."""
    message = error.message
    assertion = re.search(r"assertion failed: \[([^\]]*)\]", message)
    if assertion:
        message = assertion.group(1)
    return ServingError(_TF_CODE_NAMES.get(error.error_code, "UNKNOWN"), message)


def as_serving_error(error: BaseException) -> ServingError:
    """Any failure of a call as a ServingError (an unexpected one as INTERNAL)."""
    if isinstance(error, ServingError):
        return error
    return ServingError("INTERNAL", f"{type(error).__name__}: {error}")
