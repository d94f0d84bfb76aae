"""Unit tests of the lab's small shared helpers (edgeai_lab.core) that tests and benchmarks use."""

from __future__ import annotations

import itertools

import pytest
from edgeai_lab.core import wait_until


def test_wait_until_returns_the_first_true_value_of_the_predicate():
    tries = itertools.count()
    assert wait_until(lambda: next(tries) >= 2 and ["found"], 5, 0.001) == ["found"]
    assert next(tries) == 3  # tried no more once it held


def test_wait_until_names_what_it_waited_for_when_the_time_is_up():
    with pytest.raises(AssertionError, match=r"timed out after 0.05s waiting for an empty queue"):
        wait_until(lambda: 0, 0.05, 0.01, what="an empty queue")


def test_wait_until_without_a_what_returns_none_when_the_time_is_up():
    assert wait_until(lambda: [], 0.05, 0.01) is None
