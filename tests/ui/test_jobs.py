"""ui.jobs: one background job at a time, its progress, stop and outcome."""

from __future__ import annotations

import threading

import pytest

from autolabel.errors import ConfigError, ImageLoadError
from autolabel.ui import jobs
from autolabel.ui.jobs import Job, JobRunner, format_duration


def _run(runner, work, *args):
    job = runner._launch(Job("r"), work, *args)
    job.thread.join(10)
    assert not job.running
    return job


def test_a_job_counts_its_progress_and_keeps_its_summary():
    def work(job, on_total, on_progress):
        on_total(3)
        for _ in range(3):
            on_progress(1)
        job.summary = "done"

    runner = JobRunner()
    job = _run(runner, work)
    assert (job.total, job.processed, job.summary, job.error, job.stopped) == (3, 3, "done", None, False)
    assert runner.current() is job and runner.job("r") is job and runner.job(None) is None
    assert job.eta_seconds is None and job.elapsed >= 0  # finished: no estimate


def test_a_stop_ends_the_work_at_its_next_progress_report():
    started, go_on = threading.Event(), threading.Event()

    def work(job, on_total, on_progress):
        on_total(10)
        started.set()
        go_on.wait(10)
        on_progress(1)
        on_progress(1)  # never reached: the stop is seen at the first report

    runner = JobRunner()
    job = runner._launch(Job("r"), work)
    started.wait(10)
    with pytest.raises(ConfigError, match="run r is still running"):
        runner._launch(Job("other"), work)  # one at a time
    assert runner.stop() is job and job.stop_requested
    go_on.set()
    job.thread.join(10)
    assert job.stopped and job.processed == 1 and job.error is None


def test_errors_become_one_line(caplog):
    def user_error(job, on_total, on_progress):
        raise ImageLoadError("a.jpg: not an image")

    def bug(job, on_total, on_progress):
        raise KeyError("x")

    assert _run(JobRunner(), user_error).error == "a.jpg: not an image"
    job = _run(JobRunner(), bug)
    assert job.error == "unexpected KeyError: 'x'" and "job r failed" in caplog.text  # the traceback is logged


def test_the_estimate_and_durations(monkeypatch):
    monkeypatch.setattr(jobs.time, "perf_counter", lambda: 100.0)
    job = Job("r", started=0.0, total=100)
    assert job.eta_seconds is None  # nothing done yet: no estimate
    job.processed = 25  # 0.25 per second, 75 to go
    assert job.per_second == pytest.approx(0.25) and job.eta_seconds == pytest.approx(300)
    assert [format_duration(s) for s in (42, 180, 7500)] == ["42 s", "3 min", "2 h 05 min"]
