import pytest

from workflows.ratelimit import (
    Level,
    Limit,
    QueueLimits,
    empty,
    limits_for,
    observe,
    parse_limits,
    refill,
    retry_after_seconds,
    seconds_until_full,
    settle,
    take,
)

RPM_60 = Limit(60)  # 1 token per second, capacity 60


@pytest.mark.parametrize(
    ("level", "now", "expected"),
    [
        (None, 0.0, 60.0),  # a bucket never used is full
        (Level(0.0, 0.0), 0.5, 0.5),  # replenished continuously, not on the minute
        (Level(0.0, 0.0), 30.0, 30.0),
        (Level(10.0, 0.0), 100.0, 60.0),  # never above capacity
        (Level(-5.0, 0.0), 2.0, -3.0),  # a debt is paid back at the refill rate
        (Level(5.0, 10.0), 9.0, 5.0),  # a clock that went backwards adds nothing
    ],
)
def test_a_bucket_refills_continuously_up_to_its_capacity(level, now, expected):
    assert refill(RPM_60, level, now) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("levels", "costs", "max_wait", "granted", "wait"),
    [
        ({"requests": Level(1.0, 0.0)}, {"requests": 1}, 0.0, True, 0.0),
        ({"requests": Level(0.5, 0.0)}, {"requests": 1}, 0.0, False, 0.5),  # a server refuses
        ({"requests": Level(0.5, 0.0)}, {"requests": 1}, 1.0, True, 0.5),  # a client reserves
        ({"requests": Level(-2.0, 0.0)}, {"requests": 1}, 5.0, True, 3.0),  # behind two reservations
        ({"requests": Level(-2.0, 0.0)}, {"requests": 1}, 2.0, False, 3.0),
    ],
)
def test_a_take_goes_now_waits_its_turn_or_is_refused(levels, costs, max_wait, granted, wait):
    decision = take({"requests": RPM_60}, levels, costs, 0.0, max_wait_s=max_wait)
    assert decision.granted is granted
    assert decision.wait_s == pytest.approx(wait)


def test_a_refused_take_leaves_every_bucket_as_it_was():
    levels = {"requests": Level(5.0, 0.0), "input_tokens": Level(10.0, 0.0)}
    decision = take({"requests": RPM_60, "input_tokens": Limit(600)}, levels, {"requests": 1, "input_tokens": 100},
                    0.0)
    assert not decision.granted
    assert decision.wait_s == pytest.approx(9.0)  # 90 input tokens short at 10 per second
    assert decision.levels == levels


def test_a_granted_take_debits_every_bucket_and_the_slowest_sets_the_wait():
    limits = {"requests": RPM_60, "input_tokens": Limit(600), "output_tokens": Limit(6000)}
    decision = take(limits, {}, {"requests": 1, "input_tokens": 700, "output_tokens": 10}, 3.0, max_wait_s=60)
    assert decision.granted
    # 700 input tokens exceed the capacity of 600: clamped, so a full bucket pays it at once.
    assert decision.levels == {"requests": Level(59.0, 3.0), "input_tokens": Level(0.0, 3.0),
                               "output_tokens": Level(5990.0, 3.0)}
    assert decision.wait_s == 0.0


def test_reservations_space_waiting_callers_at_the_refill_rate():
    levels: dict = {"requests": Level(0.0, 0.0)}
    waits = []
    for _ in range(4):
        d = take({"requests": RPM_60}, levels, {"requests": 1}, 0.0, max_wait_s=10)
        levels = dict(d.levels)
        waits.append(d.wait_s)
    assert waits == pytest.approx([1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize(
    ("level", "delta", "expected"),
    [
        (Level(10.0, 0.0), 5.0, 15.0),  # unused output tokens come back
        (Level(10.0, 0.0), -15.0, -5.0),  # more input than estimated is charged after the fact
        (Level(58.0, 0.0), 5.0, 60.0),  # never above capacity
    ],
)
def test_settling_gives_back_or_charges_the_difference(level, delta, expected):
    assert settle(RPM_60, level, delta, 0.0).tokens == pytest.approx(expected)


@pytest.mark.parametrize(
    ("tokens", "remaining", "expected"),
    [
        (50.0, 40.0, 50.0),  # plenty left: the headers are older than our own count
        (50.0, 5.0, 5.0),  # remaining low: slow down to what the provider says
        (3.0, 5.0, 3.0),  # we are already lower
        (-4.0, 1.0, -4.0),  # reservations outstanding stay outstanding
    ],
)
def test_low_remaining_headers_slow_the_bucket_down(tokens, remaining, expected):
    assert observe(RPM_60, Level(tokens, 0.0), remaining, 0.0).tokens == pytest.approx(expected)


@pytest.mark.parametrize(
    ("tokens", "remaining", "expected"),
    [
        (54.0, 30.0, 54.0),  # 30 - 6 usable is plenty: ignored
        (0.0, 2.0, -4.0),  # both buckets ran dry together: step back until the provider holds the reserve
        (0.0, 0.0, -6.0),  # a header saying nothing is left: the same
        (-9.0, 2.0, -9.0),  # already further back
    ],
)
def test_a_bucket_below_the_limit_keeps_its_reserve_at_the_provider(tokens, remaining, expected):
    # capacity 54 of the provider's 60: 6 tokens stay at the provider, also when the headers drive the level
    assert observe(Limit(60, 54), Level(tokens, 0.0), remaining, 0.0).tokens == pytest.approx(expected)


@pytest.mark.parametrize(("tokens", "expected"), [(54.0, 0.0), (-3.0, -3.0)])
def test_a_429_empties_the_bucket_without_the_reserve(tokens, expected):
    assert empty(Limit(60, 54), Level(tokens, 0.0), 0.0).tokens == pytest.approx(expected)


@pytest.mark.parametrize(("tokens", "seconds"), [(60.0, 0.0), (0.0, 60.0), (-6.0, 66.0), (59.5, 0.5)])
def test_the_reset_time_is_when_the_bucket_is_full_again(tokens, seconds):
    assert seconds_until_full(RPM_60, tokens) == pytest.approx(seconds)


@pytest.mark.parametrize(("wait", "header"), [(0.0, 0), (0.01, 1), (1.0, 1), (1.2, 2), (59.9, 60)])
def test_retry_after_is_whole_seconds_never_zero_for_a_real_wait(wait, header):
    assert retry_after_seconds(wait) == header


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", {}),
        ("claude-haiku-4-5:rpm=600", {"claude-haiku-4-5": QueueLimits(rpm=600)}),
        ("m:rpm=50, itpm=30000 ,otpm=8000; *:rpm=10",
         {"m": QueueLimits(50, 30000, 8000), "*": QueueLimits(rpm=10)}),
    ],
)
def test_limits_parse_per_model(spec, expected):
    assert parse_limits(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("claude-haiku-4-5", "expected MODEL:rpm=N"),
        ("m:rpm=fast", "'fast' is not a number"),
        ("m:rpm=0", "must be positive"),
        ("m:tpm=5", "expected rpm=N, itpm=N or otpm=N"),
        ("m:", "at least one"),
        ("m:rpm=1;m:rpm=2", "limited twice"),
    ],
)
def test_bad_limits_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_limits(spec)


def test_a_model_without_its_own_limits_takes_the_wildcard_or_none():
    table = parse_limits("a:rpm=5;*:rpm=9")
    assert limits_for(table, "a").rpm == 5
    assert limits_for(table, "b").rpm == 9
    assert limits_for({}, "b").buckets() == {}
    assert QueueLimits(rpm=5, otpm=7).describe() == "rpm=5,otpm=7"


def test_a_client_bucket_keeps_a_reserve_but_refills_at_the_full_rate():
    (limit,) = QueueLimits(rpm=600).buckets(burst_share=0.9).values()
    assert limit.capacity == 540 and limit.per_s == 10
    assert refill(limit, Level(0.0, 0.0), 100.0) == 540
    assert QueueLimits(rpm=600).buckets()["requests"].capacity == 600


@pytest.mark.parametrize("burst", [0.0, 700.0])
def test_a_burst_outside_the_limit_is_refused(burst):
    with pytest.raises(ValueError, match="burst"):
        Limit(600, burst)
