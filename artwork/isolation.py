"""Run the artwork pipeline in a child process, so the process that took an upload (a web
worker that also serves decisions) never loads torch or OpenCV, and a decoder that crashes
or hangs on a hostile file takes down the child, not the server.

The child is started on first use (spawned, not forked: a forked copy of a web worker would
carry its threads and connections) and kept for the next upload.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from artwork.embedding import EmbeddingError
from artwork.errors import ArtworkError, BadImage
from artwork.pipeline import PipelineConfig, Processed, process

log = logging.getLogger(__name__)

# A 50-megapixel upload takes a few seconds on one core; a minute is a hang.
DEFAULT_TIMEOUT = 60.0


def _process_in_child(
    data: bytes, config: PipelineConfig, focus: tuple[float, float] | None
) -> Processed | tuple[str, str, str]:
    try:
        processed = process(data, config, focus)
    except ArtworkError as error:
        # Sent back as plain values: the exception classes take two arguments, which
        # pickling an exception would not pass back.
        return type(error).__name__, error.code, error.message
    except EmbeddingError:
        raise  # the operator's weights file, not the upload: a server error, with its reason
    except Exception:
        # Whatever else a hostile file provokes in a decoder or OpenCV is still about that
        # file: refuse it (422), and leave the traceback in the log for us.
        log.exception("the artwork pipeline failed on an upload")
        return "BadImage", "unprocessable_image", "the image could not be processed"
    # The fitted images were only needed for placeholders, already drawn; don't ship them.
    renditions = [dataclasses.replace(r, fitted=None) for r in processed.renditions]
    return dataclasses.replace(processed, renditions=renditions)


class PipelineProcess:
    """A long-lived child process that runs `artwork.pipeline.process`."""

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, cpus: frozenset[int] | None = None
    ) -> None:
        if timeout <= 0:
            raise ValueError("the pipeline timeout must be positive")
        self.timeout = timeout
        # The CPUs the child runs on (None: this process's), for a parent pinned to one.
        self.cpus = cpus
        self._pool: ProcessPoolExecutor | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=None if self.cpus is None else os.sched_setaffinity,
                    initargs=() if self.cpus is None else (0, sorted(self.cpus)),
                )
                self._pid = os.getpid()
            return self._pool

    def __call__(
        self, data: bytes, config: PipelineConfig, focus: tuple[float, float] | None = None
    ) -> Processed:
        future = self._executor().submit(_process_in_child, data, config, focus)
        try:
            result = future.result(timeout=self.timeout)
        except FutureTimeout:
            self._kill()
            raise BadImage(
                "processing_timeout",
                f"the image could not be processed within {self.timeout:g} seconds",
            ) from None
        except BrokenProcessPool:
            self._kill()
            raise BadImage(
                "undecodable_image", "the image crashed the decoder and was refused"
            ) from None
        if isinstance(result, tuple):
            kind, code, message = result
            error_class = next((c for c in _error_classes() if c.__name__ == kind), ArtworkError)
            raise error_class(code, message)
        return result

    def _kill(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        # The pool cannot cancel a running task; ending its process is the only way out of
        # a hang. `_processes` is the executor's own table of its children.
        for child in list(getattr(pool, "_processes", {}).values()):
            child.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_shared: PipelineProcess | None = None
_shared_lock = threading.Lock()


def shared_pipeline_process(
    timeout: float = DEFAULT_TIMEOUT, cpus: frozenset[int] | None = None
) -> PipelineProcess:
    """This process's pipeline child, started on first use and shared by every app in it
    (tests build many apps; each would otherwise start, and import torch in, its own).
    `cpus` applies to a child started from then on."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PipelineProcess(timeout)
        _shared.timeout = timeout
        _shared.cpus = cpus
        return _shared


def _error_classes() -> list[type[ArtworkError]]:
    found: list[type[ArtworkError]] = []
    pending: list[type[ArtworkError]] = [ArtworkError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
