"""The dynamic batch scheduler with a fake model: merging, splitting back, TF Serving's knobs,
a full queue refused at once, errors reaching every request of a batch, draining on close."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.serve.batching import BatchScheduler
from app.serve.errors import ServingError
from app.serve.options import BatchingOptions, read_batching_file


class FakeModel:
    """Doubles `x`; records each call's batch size; can be held to let requests pile up."""

    def __init__(self):
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.calls_started = threading.Semaphore(0)

    def __call__(self, inputs):
        self.calls_started.release()
        self.gate.wait(10)
        self.sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2, "rows": np.full(len(inputs["x"]), len(inputs["x"]))}


def rows(*values):
    return {"x": np.array(values, dtype=np.float32)}


def test_concurrent_requests_merge_into_one_call_and_each_gets_its_own_rows():
    model = FakeModel()
    scheduler = BatchScheduler(model, BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000))
    futures = [scheduler.submit(rows(i, i + 0.5)) for i in range(3)]
    results = [future.result(10) for future in futures]
    scheduler.close()
    assert model.sizes == [6]  # one call for three requests
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [2 * i, 2 * i + 1])
        np.testing.assert_array_equal(result["rows"], [6, 6])


def test_a_full_batch_runs_without_waiting_for_the_timeout():
    model = FakeModel()
    scheduler = BatchScheduler(model, BatchingOptions(max_batch_size=4, batch_timeout_micros=30_000_000))
    started = time.monotonic()
    futures = [scheduler.submit(rows(i)) for i in range(4)]
    [future.result(10) for future in futures]
    assert time.monotonic() - started < 5  # not the 30 s timeout
    scheduler.close()
    assert model.sizes == [4]


def test_a_request_that_does_not_fit_opens_the_next_batch():
    model = FakeModel()
    model.gate.clear()  # hold the first call so the others queue up behind it
    scheduler = BatchScheduler(model, BatchingOptions(max_batch_size=4, batch_timeout_micros=0))
    first = scheduler.submit(rows(0))
    assert model.calls_started.acquire(timeout=10)
    later = [scheduler.submit(rows(1, 2, 3)), scheduler.submit(rows(4, 5)), scheduler.submit(rows(6))]
    model.gate.set()
    outputs = [f.result(10)["y"].tolist() for f in [first, *later]]
    scheduler.close()
    assert outputs == [[0], [2, 4, 6], [8, 10], [12]]
    assert model.sizes == [1, 3, 3]  # 3 rows, then 2 + 1 (the 2 did not fit beside the 3)


def test_a_request_over_max_batch_size_is_split_and_joined_in_order():
    model = FakeModel()
    scheduler = BatchScheduler(model, BatchingOptions(max_batch_size=4, batch_timeout_micros=0))
    result = scheduler.submit(rows(*range(10))).result(10)
    scheduler.close()
    np.testing.assert_array_equal(result["y"], np.arange(10) * 2)
    assert sorted(model.sizes) == [2, 4, 4]


def test_batches_are_padded_to_the_allowed_sizes_and_the_padding_dropped():
    model = FakeModel()
    options = BatchingOptions(max_batch_size=8, batch_timeout_micros=0, allowed_batch_sizes=(2, 8))
    scheduler = BatchScheduler(model, options)
    result = scheduler.submit(rows(1, 2, 3)).result(10)
    scheduler.close()
    assert model.sizes == [8]
    np.testing.assert_array_equal(result["y"], [2, 4, 6])


def test_a_full_queue_is_refused_at_once_with_unavailable():
    model = FakeModel()
    model.gate.clear()
    options = BatchingOptions(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=2)
    scheduler = BatchScheduler(model, options)
    running = scheduler.submit(rows(0))
    assert model.calls_started.acquire(timeout=10)  # taken off the queue, running
    queued = [scheduler.submit(rows(1)), scheduler.submit(rows(2))]
    started = time.monotonic()
    with pytest.raises(ServingError) as refused:
        scheduler.submit(rows(3))
    assert time.monotonic() - started < 1
    assert refused.value.code == "UNAVAILABLE" and refused.value.http_status == 503
    assert "queue" in refused.value.message and "full" in refused.value.message
    model.gate.set()
    assert [f.result(10)["y"].tolist() for f in [running, *queued]] == [[0], [2], [4]]
    scheduler.close()


def test_a_failed_call_fails_every_request_of_its_batch_and_the_scheduler_goes_on():
    calls = []

    def flaky(inputs):
        calls.append(len(inputs["x"]))
        if len(calls) == 1:
            raise ServingError("INVALID_ARGUMENT", "bad batch")
        return {"y": inputs["x"]}

    scheduler = BatchScheduler(flaky, BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000))
    failing = [scheduler.submit(rows(1)), scheduler.submit(rows(2))]
    for future in failing:
        with pytest.raises(ServingError, match="bad batch"):
            future.result(10)
    assert scheduler.submit(rows(3)).result(10)["y"].tolist() == [3]
    scheduler.close()


def test_close_answers_every_queued_request_then_refuses_new_ones():
    model = FakeModel()
    model.gate.clear()
    scheduler = BatchScheduler(model, BatchingOptions(max_batch_size=1, batch_timeout_micros=0))
    futures = [scheduler.submit(rows(i)) for i in range(3)]
    closing = threading.Thread(target=scheduler.close)
    closing.start()
    time.sleep(0.2)
    with pytest.raises(ServingError, match="shutting down"):
        scheduler.submit(rows(9))
    model.gate.set()
    closing.join(10)
    assert [f.result(0)["y"].tolist() for f in futures] == [[0], [2], [4]]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be at least 1"),
        ({"batch_timeout_micros": -1}, "batch_timeout_micros must be at least 0"),
        ({"allowed_batch_sizes": (8, 4, 64)}, "must ascend"),
        ({"allowed_batch_sizes": (8, 32)}, "end with max_batch_size"),
    ],
)
def test_batching_options_are_checked(values, message):
    with pytest.raises(ValueError, match=message):
        BatchingOptions(**values)


def test_tf_servings_batching_parameters_file_is_read(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text(
        "# as for tensorflow_model_server --batching_parameters_file\n"
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 500 }\n"
        "num_batch_threads { value: 2 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 32\n"
    )
    options = read_batching_file(path)
    assert options == BatchingOptions(
        max_batch_size=32, batch_timeout_micros=500, num_batch_threads=2, allowed_batch_sizes=(8, 32)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: 32 }\nfoo: 3\n", r":2: cannot read 'foo: 3'"),
        (
            "pad_variable_length_inputs { value: 1 }\n",
            "unknown batching parameter 'pad_variable_length_inputs'",
        ),
        ("max_batch_size { value: 0 }\n", "max_batch_size must be at least 1"),
    ],
)
def test_a_bad_batching_parameters_file_says_where(tmp_path, text, message):
    path = tmp_path / "batching.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_batching_file(path)
