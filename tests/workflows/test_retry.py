import pytest

from workflows.retry import cap_countdown, compute_backoff


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "expected"),
    [
        (1, 0.0, None, 0.5),
        (1, 0.999, None, 0.9995),
        (2, 0.0, None, 1.0),
        (3, 0.5, None, 3.0),
        (10, 0.0, None, 30.0),  # capped at 60 s before jitter halves it
        (10, 0.99, None, 59.7),
        (1, 0.0, 7.0, 7.0),  # retry-after is a floor
        (4, 0.0, 0.1, 4.0),  # ... but never shortens the backoff
    ],
)
def test_backoff_is_exponential_with_jitter_and_honours_retry_after(attempt, jitter, retry_after, expected):
    assert compute_backoff(attempt, base_s=1.0, cap_s=60.0, retry_after_s=retry_after, jitter=jitter) == (
        pytest.approx(expected)
    )


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.0), (1, 1.0), (1, -0.1)])
def test_backoff_rejects_impossible_inputs(attempt, jitter):
    with pytest.raises(ValueError):
        compute_backoff(attempt, jitter=jitter)


@pytest.mark.parametrize(
    ("delay", "visibility", "expected"),
    [(5.0, 3600.0, 5.0), (7200.0, 3600.0, 1800.0), (30.0, 20.0, 10.0), (-1.0, 20.0, 0.0)],
)
def test_a_countdown_stays_well_below_the_visibility_timeout(delay, visibility, expected):
    assert cap_countdown(delay, visibility) == expected
    assert cap_countdown(delay, visibility) < visibility
