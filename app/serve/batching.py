"""Dynamic batching, as TF Serving's basic batch scheduler does it: concurrent requests to one
signature are merged into one SavedModel call and the outputs split back.

A request joins the open batch if it fits (at most `max_batch_size` rows); otherwise it opens a
new one. A batch runs when a batch thread is free and it is full, or its oldest request has
waited `batch_timeout_micros`. At most `max_enqueued_batches` wait; a request that finds no room
is refused at once (UNAVAILABLE), so a flood turns into fast 503s, not into a growing queue.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from app.serve.errors import ServingError
from app.serve.options import BatchingOptions

Arrays = dict[str, np.ndarray]


class _Task:
    def __init__(self, inputs: Arrays, size: int):
        self.inputs, self.size, self.future = inputs, size, Future()


class _Batch:
    def __init__(self, timeout_seconds: float):
        self.tasks: list[_Task] = []
        self.size = 0
        self.closed = False  # no further task may join
        self.deadline = time.monotonic() + timeout_seconds


class BatchScheduler:
    """Runs `process` on merged batches of rows from concurrent `submit` calls.

    Args:
        process: the signature call; every input and output has the batch as its first axis.
        options: TF Serving's batching knobs.
        on_batch: called with each batch's size before it runs (metrics).
    """

    def __init__(
        self,
        process: Callable[[Arrays], Arrays],
        options: BatchingOptions,
        on_batch: Callable[[int], None] | None = None,
        name: str = "batch",
    ):
        self._process, self._options, self._on_batch = process, options, on_batch or (lambda size: None)
        self._batches: deque[_Batch] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Arrays) -> Future:
        """Queues a request's rows; its future gets that request's rows of every output.

        Raises ServingError(UNAVAILABLE) at once when the queue is full or the scheduler stops."""
        size = len(next(iter(inputs.values())))
        largest = self._options.max_batch_size
        chunks = [
            _Task({k: v[start : start + largest] for k, v in inputs.items()}, min(largest, size - start))
            for start in range(0, max(size, 1), largest)
        ]
        with self._condition:
            if self._stopping:
                raise ServingError("UNAVAILABLE", "the server is shutting down")
            if self._free_batches(chunks) < 0:
                raise ServingError(
                    "UNAVAILABLE",
                    "The batch scheduling queue to which this task was submitted is full "
                    f"(max_enqueued_batches={self._options.max_enqueued_batches})",
                )
            for task in chunks:
                self._enqueue(task)
            self._condition.notify_all()
        return chunks[0].future if len(chunks) == 1 else _joined([task.future for task in chunks])

    def _free_batches(self, tasks: list[_Task]) -> int:
        """How many batches would still be free after `tasks` joined the queue (negative: too many)."""
        open_room = self._options.max_batch_size - self._batches[-1].size if self._open_batch() else 0
        needed = 0
        for task in tasks:
            if task.size <= open_room:
                open_room -= task.size
            else:
                needed, open_room = needed + 1, self._options.max_batch_size - task.size
        return self._options.max_enqueued_batches - len(self._batches) - needed

    def _open_batch(self) -> bool:
        return bool(self._batches) and not self._batches[-1].closed

    def _enqueue(self, task: _Task) -> None:
        if not self._open_batch() or self._batches[-1].size + task.size > self._options.max_batch_size:
            if self._batches:
                self._batches[-1].closed = True
            self._batches.append(_Batch(self._options.batch_timeout_micros / 1e6))
        batch = self._batches[-1]
        batch.tasks.append(task)
        batch.size += task.size
        if batch.size == self._options.max_batch_size:
            batch.closed = True

    def _next_batch(self) -> _Batch | None:
        """Waits for a batch that may run; None once stopping with nothing left."""
        with self._condition:
            while True:
                if self._batches:
                    first = self._batches[0]
                    wait = first.deadline - time.monotonic()
                    if first.closed or wait <= 0 or self._stopping:
                        return self._batches.popleft()
                    self._condition.wait(wait)
                elif self._stopping:
                    return None
                else:
                    self._condition.wait()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _run(self, batch: _Batch) -> None:
        padded = self._padded_size(batch.size)
        inputs = {
            key: np.concatenate([task.inputs[key] for task in batch.tasks]) for key in batch.tasks[0].inputs
        }
        if padded > batch.size:  # repeat the first row, as TF Serving pads
            inputs = {
                key: np.concatenate([value, np.repeat(value[:1], padded - batch.size, axis=0)])
                for key, value in inputs.items()
            }
        self._on_batch(batch.size)
        try:
            outputs = self._process(inputs)
        except BaseException as error:  # noqa: BLE001  (every waiting request gets the error)
            for task in batch.tasks:
                task.future.set_exception(error)
            return
        start = 0
        for task in batch.tasks:
            task.future.set_result({key: value[start : start + task.size] for key, value in outputs.items()})
            start += task.size

    def _padded_size(self, size: int) -> int:
        return next((allowed for allowed in self._options.allowed_batch_sizes if allowed >= size), size)

    def close(self) -> None:
        """Runs every queued batch, then stops the threads (requests submitted later get UNAVAILABLE)."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()


def _joined(futures: list[Future]) -> Future:
    """One future for a request split into several batches: its outputs concatenated in order."""
    joined: Future = Future()
    remaining = [len(futures)]
    lock = threading.Lock()

    def finished(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        errors = [future.exception() for future in futures if future.exception() is not None]
        if errors:
            joined.set_exception(errors[0])
        else:
            parts = [future.result() for future in futures]
            joined.set_result({key: np.concatenate([part[key] for part in parts]) for key in parts[0]})

    for future in futures:
        future.add_done_callback(finished)
    return joined
