# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The readiness waiter (plugins/module_utils/_waiter.py), on a fake clock."""

from __future__ import annotations

import pytest
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ServerError, WaitTimeout
from ansible_collections.edgeai.fleet.plugins.module_utils._waiter import Waiter


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_when_condition_met():
    clock = Clock()
    answers = iter([False, False, True])
    result = Waiter(10, 2, clock=clock, sleep=clock.sleep).wait(lambda: (next(answers), "x"))
    assert result["attempts"] == 3
    assert result["elapsed"] == 4.0
    assert clock.sleeps == [2, 2]


def test_times_out_with_last_info_and_never_sleeps_past_deadline():
    clock = Clock()
    with pytest.raises(WaitTimeout, match="model to be READY.*UNAVAILABLE") as err:
        Waiter(5, 2, clock=clock, sleep=clock.sleep).wait(lambda: (False, "UNAVAILABLE"), "model to be READY")
    assert clock.sleeps == [2, 2, 1]
    assert err.value.details["attempts"] == 4


def test_condition_true_at_deadline_is_seen():
    clock = Clock()
    result = Waiter(3, 10, clock=clock, sleep=clock.sleep).wait(lambda: (clock.now >= 3, None))
    assert result["elapsed"] == 3


def test_retry_on_exceptions_counts_as_not_yet():
    clock = Clock()
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ServerError("connection refused")
        return True, "ok"

    assert Waiter(10, 1, clock=clock, sleep=clock.sleep).wait(flaky, retry_on=(ServerError,))["info"] == "ok"
    with pytest.raises(ValueError):
        Waiter(10, 1, clock=clock, sleep=clock.sleep).wait(lambda: (item for item in ()).throw(ValueError("boom")))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Waiter(-1)
    with pytest.raises(ValueError):
        Waiter(1, 0)
