"""Room and stream pages show their own link as a QR code that a camera can read.

The served SVG is rasterised here (segno draws modules as horizontal runs in one path) and
read back with OpenCV's QR decoder; segno's own encoding of the URL must also match it.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import segno

from identity.services import Identity
from rooms.models import RoomKind
from rooms.services import get_or_create_room
from rtcsite.templatetags.qr import qr_svg
from streaming.services import create_stream

pytestmark = pytest.mark.django_db
ALICE = Identity(id="a" * 16, name="alice")


def rasterise(svg: str, scale: int = 8) -> np.ndarray:
    """segno's SVG path (``M x y`` then ``h n`` runs and ``m dx dy`` moves) as a grey image."""
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))
    path = re.search(r'<path class="qrline"[^>]* d="([^"]+)"', svg).group(1)
    image = np.full((size, size), 255, np.uint8)
    x = y = 0.0
    for op, args in re.findall(r"([MmHh])([-\d. ]+)", path):
        values = [float(v) for v in args.split()]
        if op == "M":
            x, y = values
        elif op == "m":
            x, y = x + values[0], y + values[1]
        else:  # a dark run on row y (the stroke is centred half a module down)
            run = values[0]
            image[int(y - 0.5), int(x) : int(x + run)] = 0
            x += run
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def page_qr(html: str) -> tuple[str, str]:
    figure = re.search(
        r'<figure class="qr" data-testid="share-qr" data-url="([^"]+)">(.*?)<fig', html, re.S
    )
    assert figure, "no QR code on the page"
    return figure.group(1), figure.group(2)


def assert_reads_as(svg: str, url: str) -> None:
    assert svg == qr_svg(url)  # segno's own encoding of exactly this URL
    assert segno.make(url, error="m").designator  # a valid symbol for it
    # OpenCV's ArUco-based reader: the classic QRCodeDetector misreads about 1 in 75 of these
    # symbols at this scale (segno's output is valid: the ArUco reader read 300 of 300)
    text, _points, _ = cv2.QRCodeDetectorAruco().detectAndDecode(rasterise(svg))
    assert text == url


def test_room_page_shows_its_link_as_a_qr_code(client, settings):
    settings.ALLOWED_HOSTS = ["192.168.1.23"]
    room = get_or_create_room("Phone friendly", RoomKind.MESH, ALICE).room
    html = client.get(f"/rooms/{room.slug}/", HTTP_HOST="192.168.1.23:8443", secure=True).content
    url, svg = page_qr(html.decode())
    assert url == f"https://192.168.1.23:8443/rooms/{room.slug}/"
    assert_reads_as(svg, url)


@pytest.mark.parametrize("suffix", ["", "hls/", "dash/"])
def test_stream_pages_show_their_link_as_a_qr_code(client, suffix):
    stream, _ = create_stream("On the phone", ALICE)
    response = client.get(f"/streams/{stream.slug}/{suffix}")
    assert response.status_code == 200
    url, svg = page_qr(response.content.decode())
    assert url == f"http://testserver/streams/{stream.slug}/{suffix}"
    assert_reads_as(svg, url)
