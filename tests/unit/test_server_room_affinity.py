"""Who yields when a relay room's participants are on different processes."""

from presence.backends.base import Presence
from signaling.media.rooms import joined_elsewhere


def member(conn: str, process: str, joined_at: float) -> Presence:
    return Presence(
        room="pair",
        peer_id=conn,
        user_id=conn,
        name=conn,
        joined_at=joined_at,
        process=process,
        media={},
        expires_at=joined_at + 30,
    )


def test_the_later_joiner_on_another_process_yields_and_exactly_one_of_a_tie():
    a, b = member("aaaa", "host:1", 10.0), member("bbbb", "host:2", 11.0)
    assert joined_elsewhere("relay", "bbbb", [a, b], "host:2")
    assert not joined_elsewhere("relay", "aaaa", [a, b], "host:1")
    tie_a, tie_b = member("aaaa", "host:1", 10.0), member("bbbb", "host:2", 10.0)
    verdicts = [
        joined_elsewhere("relay", "aaaa", [tie_a, tie_b], "host:1"),
        joined_elsewhere("relay", "bbbb", [tie_a, tie_b], "host:2"),
    ]
    assert verdicts == [False, True]


def test_same_process_and_other_kinds_never_yield():
    a, b = member("aaaa", "host:1", 10.0), member("bbbb", "host:1", 11.0)
    assert not joined_elsewhere("relay", "bbbb", [a, b], "host:1")
    c = member("cccc", "host:2", 11.0)
    assert not joined_elsewhere("echo", "cccc", [a, c], "host:2")
    assert not joined_elsewhere("mesh", "cccc", [a, c], "host:2")
    assert not joined_elsewhere("relay", "gone", [a], "host:2")
