"""Per-image failures that are not a known problem with the file (a bug, or a broken environment),
and the watch that stops a run whose first images all fail that same way. Both engines use them:
``labeling.label_into_store`` and the Ray driver (``distributed.engine``)."""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from dataclasses import dataclass, replace

from autolabel.errors import AutolabelError
from autolabel.store import ImageResult

log = logging.getLogger(__name__)


class RemoteError(Exception):
    """An unexpected error raised in another process (a Ray worker), as text: its reason
    (``"KeyError: 'x'"``) and formatted traceback. Arbitrary exceptions do not always survive
    pickling, and their tracebacks never do."""

    def __init__(self, reason: str, remote_traceback: str):
        super().__init__(reason, remote_traceback)
        self.reason = reason
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.reason}\n\nRemote traceback:\n{self.remote_traceback}"


@dataclass(frozen=True)
class Unexpected(ImageResult):
    """A failed image whose error is not a known problem with the file; ``exception`` is what was
    raised (a ``RemoteError`` once it crossed processes)."""

    exception: BaseException | None = None

    @classmethod
    def of(cls, path, exc: BaseException) -> "Unexpected":
        return cls(path=str(path), error=f"{path}: unexpected {_reason(exc)}", exception=exc)

    @property
    def reason(self) -> str:
        return _reason(self.exception)

    def portable(self) -> "Unexpected":
        """This failure with its exception as a ``RemoteError``, safe to pickle to another process."""
        if self.exception is None or isinstance(self.exception, RemoteError):
            return self
        text = "".join(traceback.format_exception(self.exception))
        return replace(self, exception=RemoteError(self.reason, text))


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, RemoteError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


class FailureWatch:
    """Makes unexpected per-image failures loud: the first one is logged with its traceback, and
    when every image so far has failed for the same unexpected reason (a broken install, not bad
    files) the run stops after ``limit`` images instead of marking a whole dataset failed."""

    def __init__(self, limit: int):
        self.limit = limit
        self.succeeded = False
        self.reasons: Counter = Counter()

    @classmethod
    def for_batch_size(cls, batch_size: int) -> "FailureWatch":
        """The watch of a run committing ``batch_size`` images at a time: a couple of batches, at least 8."""
        return cls(limit=max(2 * batch_size, 8))

    def check(self, results: list[ImageResult]) -> None:
        """Count a committed batch; ``AutolabelError`` once the run should stop."""
        for res in results:
            if not res.error:
                self.succeeded = True
            elif isinstance(res, Unexpected):
                if not self.reasons:
                    log.error("unexpected error on %s", res.path, exc_info=res.exception)
                self.reasons[res.reason] += 1
        if self.succeeded or len(self.reasons) != 1:
            return
        (reason, count), = self.reasons.items()
        if count >= self.limit:
            raise AutolabelError(f"stopped: the first {count} images all failed with the same unexpected error "
                                 f"({reason}); finished work is saved, see the traceback above")
