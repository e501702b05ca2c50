"""Unexpected per-image failures: portable across processes, and the watch that stops a run."""

from __future__ import annotations

import logging
import pickle

import pytest

from autolabel.errors import AutolabelError
from autolabel.failures import FailureWatch, RemoteError, Unexpected
from autolabel.store import ImageResult


class _Unpicklable(Exception):
    def __init__(self, code, detail):  # two required arguments: pickle cannot rebuild it
        super().__init__(f"{code}: {detail}")


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_portable_failure_keeps_its_reason_and_traceback_through_pickle():
    failure = Unexpected.of("a.jpg", _raised(_Unpicklable(7, "broken codec")))
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(failure))  # why failures are made portable before they travel
    back = pickle.loads(pickle.dumps(failure.portable()))
    assert isinstance(back.exception, RemoteError)
    assert back.reason == failure.reason == "_Unpicklable: 7: broken codec"
    assert back.error == "a.jpg: unexpected _Unpicklable: 7: broken codec"
    assert "_raised" in back.exception.remote_traceback  # the frame that raised it


def test_the_watch_stops_a_run_whose_images_all_fail_the_same_unexpected_way(caplog):
    watch = FailureWatch.for_batch_size(2)
    failures = [Unexpected.of(f"{i}.jpg", RemoteError("ZeroDivisionError: bug", "Traceback ...")) for i in range(8)]
    with caplog.at_level(logging.ERROR, logger="autolabel.failures"):
        watch.check(failures[:4])
        with pytest.raises(AutolabelError, match=r"first 8 images all failed .*\(ZeroDivisionError: bug\)"):
            watch.check(failures[4:])
    assert len(caplog.records) == 1 and "0.jpg" in caplog.records[0].getMessage()  # the first one only


@pytest.mark.parametrize("other", [
    ImageResult("ok.jpg", "sha", 10, 10),  # one success: the install works
    Unexpected.of("x.jpg", KeyError("other")),  # two reasons: odd files, not a broken install
])
def test_the_watch_lets_a_run_go_on_otherwise(other):
    watch = FailureWatch(limit=3)
    watch.check([other])
    watch.check([Unexpected.of(f"{i}.jpg", ZeroDivisionError("bug")) for i in range(5)])
    assert watch.reasons["ZeroDivisionError: bug"] == 5
