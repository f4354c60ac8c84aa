"""The per-identity detection budget and the clamps on client parameters, in process (the
starvation test with real Daphne is tests/integration/test_face_budget_daphne.py)."""

from __future__ import annotations

import uuid

import pytest
from django.test import override_settings

from faces import services
from identity.services import Identity
from tests.integration.test_face_frames import ASTRONAUT
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]


def someone() -> Identity:
    return Identity(id=uuid.uuid4().hex[:16], name="tester")


async def connect(identity: Identity):
    comm = communicator("/ws/faces/", identity=identity)
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from())["type"] == "hello"
    return comm


async def push(comm) -> dict:
    await comm.send_to(bytes_data=ASTRONAUT)
    return await comm.receive_json_from(timeout=30)


@override_settings(FACE_DETECT_BUDGET=0.001, FACE_DETECT_BUDGET_BURST=0.001)
async def test_a_spent_budget_refuses_every_connection_of_that_identity_only():
    ada, bob = someone(), someone()
    first, second = await connect(ada), await connect(ada)
    assert (await push(first))["type"] == "faces"  # admitted while in credit, then paid
    for comm in (first, second):  # shared by the identity's connections
        refused = await push(comm)
        assert (refused["type"], refused["code"], refused["ref"]) == (
            "error",
            "detection-budget",
            "frame",
        )
        assert refused["retry_after"] >= 1
    other = await connect(bob)
    assert (await push(other))["type"] == "faces"
    for comm in (first, second, other):
        await comm.disconnect()


def test_client_parameters_are_clamped_to_what_a_frame_may_cost():
    costly = {"scale_factor": 1.01, "min_size": 8, "detect_width": 0}
    params = services.parse_params(costly)
    assert (params.scale_factor, params.min_size, params.detect_width) == (1.05, 20, 640)
    wide = services.parse_params({"detect_width": 4096})
    assert wide.detect_width == 640
    fine = services.parse_params({"scale_factor": 1.2, "min_size": 40, "detect_width": 320})
    assert (fine.scale_factor, fine.min_size, fine.detect_width) == (1.2, 40, 320)
    # only what the client chose is clamped: the operator's own settings stand
    assert services.parse_params({"min_neighbors": 3}).detect_width == (
        services.parse_params(None).detect_width
    )
