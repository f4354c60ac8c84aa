"""The soak benchmark's bookkeeping: presence compared with the truth, convergence after a
fault, and delivery counts (no servers: the clients' state is set by hand)."""

import json

from bench.bench_soak import Client, Identity, Lobby, Params, Soak, converge_after, presence_sample


def room_of_three() -> Soak:
    soak = Soak(Params(rooms=1, seconds=1), [1])
    soak.clients = [Client(soak, i, Identity(f"token{i}", f"user{i}", "")) for i in range(3)]
    for i, client in enumerate(soak.clients):
        client.joined, client.peer_id = True, f"{i:012x}"
    for client in soak.clients:
        client.peers = {c.peer_id: c.identity.user for c in soak.clients if c is not client}
    lobby = Lobby(soak, 0, Identity("token", "lobby", ""))
    lobby.open, lobby.counts = True, {"bench-00000": 3}
    soak.lobbies = [lobby]
    return soak


def test_a_ghost_in_a_peer_list_and_a_stale_lobby_count_are_wrong():
    soak = room_of_three()
    assert presence_sample(soak)["correct"]
    soak.clients[0].peers["00000000beef"] = "user1"  # an old peer id of client 1
    soak.lobbies[0].counts["bench-00000"] = 2
    sample = presence_sample(soak)
    assert (sample["peer_lists_wrong"], sample["ghost_entries"]) == (1, 1)
    assert sample["lobby_rooms_wrong"] == [1] and not sample["correct"]


def test_a_closed_client_must_leave_the_others_lists():
    soak = room_of_three()
    soak.clients[2].joined = False
    sample = presence_sample(soak)
    assert (sample["peer_lists_wrong"], sample["ghost_entries"]) == (2, 2)


def test_converged_from_the_first_sample_after_which_all_are_correct():
    samples = [{"t": t, "correct": ok} for t, ok in [(29.5, 1), (30.5, 0), (31.5, 1), (32.5, 0)]]
    samples += [{"t": 33.5, "correct": True}, {"t": 34.5, "correct": True}]
    assert converge_after(samples, 30.0, "correct") == 3.5
    samples[-1]["correct"] = False
    assert converge_after(samples, 30.0, "correct") is None


def test_deliveries_are_counted_once_and_checked_for_their_addressee():
    soak = room_of_three()
    sender, target, other = soak.clients
    soak.t0 = 0.0
    ws = object()
    target.ws = other.ws = ws  # on_message ignores messages of a socket it no longer holds
    frame = json.dumps(
        {"type": "candidate", "from": sender.peer_id, "candidate": {"usernameFragment": "0.1.5.0"}}
    )
    target.on_message(ws, frame)
    target.on_message(ws, frame)
    other.on_message(ws, frame)
    assert (len(soak.received), soak.duplicated, soak.misdelivered) == (1, 1, 1)


def test_the_lobby_keeps_per_room_the_count_with_the_newest_time_as_the_page_does():
    """Deltas from two processes in any order (join 1, join 3, join 2): the newest ``at``
    wins; a snapshot replaces only rooms it is newer than, and covers older deltas."""
    soak = room_of_three()
    lobby = soak.lobbies[0]
    lobby.ws = ws = object()
    lobby.apply_state({"rooms": {}, "at": 10})

    def delta(room: str, event: str, count: int, at: int) -> None:
        frame = {"type": "presence", "room": room, "event": event, "count": count, "at": at}
        frame["peer"] = {"peer": f"p{at}", "name": "n"}
        lobby.on_message(ws, json.dumps(frame))

    delta("bench-00000", "join", 1, 11)
    delta("bench-00000", "join", 3, 13)
    delta("bench-00000", "join", 2, 12)
    delta("bench-00001", "join", 1, 9)  # older than the snapshot: in it already
    assert lobby.counts == {"bench-00000": 3} and presence_sample(soak)["lobby_correct"]
    delta("bench-00001", "join", 1, 14)
    delta("bench-00001", "leave", 0, 16)
    delta("bench-00001", "join", 1, 15)  # the leave came first: the room stays empty
    lobby.apply_state({"rooms": {"bench-00000": {"count": 2}}, "at": 14})
    assert lobby.counts == {"bench-00000": 2}
    lobby.apply_state({"rooms": {"bench-00001": {"count": 5}}, "at": 12})  # older: ignored
    assert lobby.counts == {"bench-00000": 2}
