"""Event ids: ULIDs, time-ordered, unique, and strictly increasing within a process."""

from __future__ import annotations

import random
import threading
import time

from metering.events import _CROCKFORD, encode_id, new_event_id


def _number(event_id: str) -> int:
    value = 0
    for char in event_id:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def test_ids_made_in_one_millisecond_sort_in_the_order_they_were_made() -> None:
    ids = [new_event_id() for _ in range(5_000)]  # thousands share each millisecond
    assert len({i[:10] for i in ids}) < len(ids)  # the time prefix repeats: the test bites
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_ids_carry_their_millisecond_and_26_crockford_characters() -> None:
    before = time.time_ns() // 1_000_000
    made = new_event_id()
    after = time.time_ns() // 1_000_000
    assert len(made) == 26 and set(made) <= set(_CROCKFORD)
    assert before <= _number(made) >> 80 <= after + 1  # +1: a carry from the same millisecond


def test_an_id_at_a_given_time_is_that_millisecond_and_random() -> None:
    at = 1_764_000_000_123_456_789
    a, b = new_event_id(at), new_event_id(at)
    assert _number(a) >> 80 == _number(b) >> 80 == at // 1_000_000
    assert a != b


def test_threads_never_make_the_same_id() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_event_id() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every)
    assert all(out == sorted(out) for out in made)


def test_the_encoding_is_crockford_base32_digit_by_digit() -> None:
    edges = [0, 1, 31, 32, 2**127, 2**128 - 1, (2**48 - 1) << 80]
    for value in edges + [random.getrandbits(128) for _ in range(2_000)]:
        made = encode_id(value)
        assert len(made) == 26 and _number(made) == value, value
        assert made == "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))
