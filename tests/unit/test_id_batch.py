"""Ids made by the thousand have the form, order and randomness of ``ids.new_uid`` (pure)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from qhook.domain import id_batch
from qhook.domain.ids import ulid

times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(now=times, noise=st.binary(min_size=10, max_size=10))
def test_the_first_ten_digits_of_a_ulid_are_its_time(now: datetime, noise: bytes) -> None:
    assert ulid(now, noise)[:10] == ulid(now, bytes(10))[:10]


def test_random_digits_are_crockford_and_cover_the_alphabet() -> None:
    digits = id_batch.random_parts(2_000)
    assert len(digits) == 32_000
    counts = Counter(digits)
    assert set(counts) == set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    # 1,000 expected per digit; a digit favoured or starved by the mapping would be far off.
    assert all(800 < n < 1_200 for n in counts.values())


def test_ids_are_unique_well_formed_and_sort_by_time() -> None:
    source = id_batch.UidSource(expected=10)
    start = datetime(2025, 10, 2, 13, 37, tzinfo=UTC)
    made = [source.new_uid("evt", start + timedelta(milliseconds=n // 3)) for n in range(300)]
    assert len(set(made)) == 300
    assert all(len(u) == 30 and u.startswith("evt_") for u in made)
    assert all(set(u[4:]) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for u in made)
    heads = [u[4:14] for u in made]
    assert heads == sorted(heads)
    assert heads[0] == ulid(start, bytes(10))[:10]
