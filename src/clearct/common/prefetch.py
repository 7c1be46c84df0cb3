"""Overlap input work with the forward pass: a bounded background iterator and an ordered read-ahead pool.

Both run in threads, not processes: reading (pydicom/nibabel decode, numpy) and rendering (torch resize) release
the GIL for most of their time, and threads share the encoder's process without pickling volumes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def background(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    An exception in the producer is re-raised in the consumer at the point it happened. When the consumer stops
    early (break, exception), the producer is told to stop and joined, so no thread outlives the loop.
    """
    if depth < 1:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Raised(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="clearct-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


def read_ahead(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[tuple[T, R | Exception]]:
    """Yield ``(item, fn(item))`` in input order, with up to ``workers`` calls running ahead in threads.

    A call that raises yields its exception instead of a result, so one bad input does not stop the rest.
    ``workers=0`` runs every call inline when its item is reached.
    """
    if workers < 1:
        for item in items:
            try:
                yield item, fn(item)
            except Exception as exc:
                yield item, exc
        return
    pending: list[tuple[T, Future[R]]] = []
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clearct-read") as pool:
        try:
            for item in source:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) > workers:
                    # named before the yield: in the yield, mypy would solve R from the yield type and fail
                    head = _result(*pending.pop(0))
                    yield head
            while pending:
                rest = _result(*pending.pop(0))
                yield rest
        finally:
            for _, future in pending:  # consumer stopped early: drop what has not started
                future.cancel()


def _result(item: T, future: Future[R]) -> tuple[T, R | Exception]:
    exc = future.exception()
    # result() re-raises what is not an Exception (KeyboardInterrupt, SystemExit), as the inline path does
    return (item, exc) if isinstance(exc, Exception) else (item, future.result())
