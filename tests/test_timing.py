"""The benchmark timer's bookkeeping (fastpw._timing), on a fake clock: which
implementation runs when, how many calls a sample holds, and what a spread says.
Nothing here measures time, so nothing depends on how busy the machine is."""

from __future__ import annotations

import pytest

from fastpw import _timing
from fastpw._timing import SPREAD_LIMIT, Spread, measure_interleaved


class FakeMachine:
    """A clock that advances only when an implementation runs: each call of `name`
    takes `cost[name]` seconds, plus `extra` during the rounds listed in `busy`."""

    def __init__(self, cost, busy_calls=()):
        self.now = 0.0
        self.cost = cost
        self.log = []
        self.busy_calls = set(busy_calls)
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append((len(self.log), seconds))

    def implementation(self, name):
        def call():
            index = len(self.log)
            self.log.append(name)
            self.now += self.cost[name] * (3.0 if index in self.busy_calls else 1.0)

        return call


def test_rounds_rotate_and_samples_are_per_call():
    machine = FakeMachine({"a": 0.001, "b": 0.004})
    spreads = measure_interleaved(
        {name: machine.implementation(name) for name in "ab"},
        rounds=4,
        target_seconds=0.08,
        clock=machine.clock,
        sleep=machine.sleep,
    )
    # 2 warm-up + sizing calls each, then samples of 0.08 / (4 * 2) = 0.01 s.
    assert spreads["a"].calls_per_sample == 10 and spreads["b"].calls_per_sample == 2
    assert spreads["a"].samples == pytest.approx((0.001,) * 4)
    assert spreads["b"].samples == pytest.approx((0.004,) * 4)
    a, b = ["a"] * 10, ["b"] * 2
    assert machine.log[4:] == a + b + b + a + a + b + b + a, "the order rotates each round"
    assert spreads["a"].steady and spreads["a"].relative_spread == 0


def test_idle_wait_only_after_a_spinning_pool_and_before_another_implementation(monkeypatch):
    monkeypatch.setattr(_timing, "WAKE_SECONDS", 0.035)
    machine = FakeMachine({"a": 0.01, "b": 0.02})
    spreads = measure_interleaved(
        {name: machine.implementation(name) for name in "ab"},
        rounds=3,
        target_seconds=0.06,
        idle_after={"b": 0.25},
        clock=machine.clock,
        sleep=machine.sleep,
    )
    # 4 sizing calls (a a b b), then one call per sample: a b | b a | a b. A wait comes
    # before each sample of a that follows one of b, none after a, none between two
    # samples of b; after a wait, untimed calls of a for WAKE_SECONDS (0.035 s: 4 calls)
    # wake the cores first.
    wake = "aaaa"
    assert machine.log == list("aabb" + wake + "ab" + "b" + wake + "a" + "ab"), machine.log
    assert machine.slept == [(4, 0.25), (11, 0.25)], machine.slept
    assert spreads["a"].samples == pytest.approx((0.01,) * 3)  # the untimed ones are not in
    assert spreads["b"].samples == pytest.approx((0.02,) * 3)


def test_a_busy_spell_makes_the_row_unsteady():
    # One call in three of the timed part runs 3x slower: some samples are slow.
    busy = range(2, 200, 3)
    machine = FakeMachine({"a": 0.001}, busy_calls=busy)
    spread = measure_interleaved(
        {"a": machine.implementation("a")},
        rounds=7,
        target_seconds=0.007,
        clock=machine.clock,
        sleep=machine.sleep,
    )["a"]
    assert spread.calls_per_sample == 1
    assert spread.max == pytest.approx(0.003) and spread.min == pytest.approx(0.001)
    assert spread.relative_spread > SPREAD_LIMIT and not spread.steady


def test_spread_statistics():
    spread = Spread((4.0, 1.0, 3.0, 2.0, 100.0), calls_per_sample=1)
    assert (spread.min, spread.median, spread.max) == (1.0, 3.0, 100.0)
    assert spread.quartiles == (1.5, 52.0)
    steady = Spread((1.00, 1.02, 0.99, 1.01, 1.00, 1.03, 0.98), calls_per_sample=5)
    assert steady.steady and steady.relative_spread == pytest.approx(0.03 / 1.0, abs=0.011)
