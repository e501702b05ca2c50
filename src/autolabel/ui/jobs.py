"""Background jobs of the UI (no Gradio import): a runner starts one job at a time in a thread and
the job records its progress and outcome, which the page polls. A refreshed page finds a running job
where it left it; the user can ask it to stop after the step in progress (what is done stays).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import KW_ONLY, dataclass, field

from autolabel.errors import AutolabelError, ConfigError

log = logging.getLogger(__name__)


class JobStopped(Exception):
    """Raised from a progress callback when the user stops the job: the work commits what it
    finished and ends."""


@dataclass
class Job:
    """Progress of one job in run ``run``: ``processed`` of ``total`` items (None: not known yet)."""

    run: str
    _: KW_ONLY
    started: float = field(default_factory=time.perf_counter)
    total: int | None = None
    processed: int = 0
    finished: float | None = None
    error: str | None = None
    summary: object = None
    stop_requested: bool = False
    stopped: bool = False
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def per_second(self) -> float:
        """Items processed per second so far."""
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far (None until an item is done or while the total is unknown)."""
        if not self.running or self.total is None or not self.processed:
            return None
        return max(self.total - self.processed, 0) / self.per_second


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2 h 05 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class JobRunner:
    """Starts and follows jobs, one at a time. ``busy``: the refusal while one runs (``{run}``: its
    run); ``kind``: what the log calls a job."""

    busy = "run {run} is still running: wait for it to finish or stop it"
    kind = "job"

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._current: Job | None = None

    def current(self) -> Job | None:
        """The running job, else the last one started."""
        return self._current

    def job(self, run: str | None) -> Job | None:
        return self._jobs.get(run) if run else None

    def stop(self) -> Job | None:
        """Ask the running job to stop after the step in progress. Returns the current job."""
        job = self._current
        if job is not None and job.running:
            job.stop_requested = True
        return job

    def _check_idle(self) -> None:
        job = self._current
        if job is not None and job.running:
            raise ConfigError(self.busy.format(run=job.run))

    def _launch(self, job: Job, work, *args) -> Job:
        """Run ``work(job, on_total, on_progress, *args)`` in a thread (``_track``) as the current job."""
        with self._lock:
            self._check_idle()
            job.thread = threading.Thread(target=self._track, args=(job, work, *args), name=f"{self.kind}-{job.run}",
                                          daemon=True)
            self._jobs[job.run] = job
            self._current = job
            job.thread.start()
        return job

    def _track(self, job: Job, work, *args) -> None:
        """Run ``work``, recording progress and the outcome in ``job``: ``on_total(n)`` sets the
        total, ``on_progress(k)`` counts ``k`` more items done; either stops the work when asked."""

        def on_total(n: int) -> None:
            job.total = n
            if job.stop_requested:
                raise JobStopped

        def on_progress(k: int) -> None:
            job.processed += k
            if job.stop_requested:
                raise JobStopped

        try:
            work(job, on_total, on_progress, *args)
        except JobStopped:
            job.stopped = True
        except AutolabelError as exc:
            job.error = str(exc)
        except Exception as exc:  # a bug: keep the traceback in the log, a line in the UI
            log.exception("%s %s failed", self.kind, job.run)
            job.error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            job.finished = time.perf_counter()
