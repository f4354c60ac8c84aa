"""``{% qr_code url %}``: the URL as an inline SVG QR code, so a phone joins by scanning.

Made on the server by segno (pure Python, no network, no script on the page: the CSP holds).
"""

from __future__ import annotations

import io

import segno
from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


def qr_svg(url: str) -> str:
    """An SVG (viewBox, no fixed size: CSS sizes it) with dark modules on white."""
    out = io.BytesIO()
    segno.make(url, error="m").save(
        out, kind="svg", xmldecl=False, svgns=True, omitsize=True, border=2, light="#fff"
    )
    return out.getvalue().decode()


@register.simple_tag
def qr_code(url: str) -> SafeString:
    # segno's SVG holds no text from the URL (only module paths): safe to inline as is
    return format_html(
        '<figure class="qr" data-testid="share-qr" data-url="{}">{}'
        "<figcaption>Scan to open this page on a phone</figcaption></figure>",
        url,
        mark_safe(qr_svg(url)),
    )
