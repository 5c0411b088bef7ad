"""The test helpers' own behaviour: wait_until returns what it waited for, or says why not."""

import pytest

from tests.helpers import wait_until


def test_wait_until_returns_the_first_truthy_value():
    values = iter([0, [], "ready", "later"])
    assert wait_until(lambda: next(values), timeout=5, interval=0) == "ready"


def test_wait_until_fails_with_its_message_and_the_last_value():
    with pytest.raises(AssertionError, match=r"^never ready \(within 0.05 s; last value: \[\]\)$"):
        wait_until(list, timeout=0.05, interval=0.01, message="never ready")


def test_wait_until_lets_the_predicates_own_failure_through_at_once():
    def died():
        raise AssertionError("the process exited")

    with pytest.raises(AssertionError, match="^the process exited$"):
        wait_until(died, timeout=60)
