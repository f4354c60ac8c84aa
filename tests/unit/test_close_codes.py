"""static/js/close-codes.js mirrors rtcsite.ws.codes.CloseCode: same names, same values, and
no bare close-code number anywhere else in static/js (the pages name the codes)."""

from __future__ import annotations

import re
from pathlib import Path

from rtcsite.ws.codes import CloseCode

JS_DIR = Path(__file__).resolve().parents[2] / "static" / "js"
JS_MODULE = JS_DIR / "close-codes.js"


def js_close_codes() -> dict[str, int]:
    source = JS_MODULE.read_text()
    body = re.search(r"export const CloseCode = Object\.freeze\(\{(.*?)\}\);", source, re.S)
    assert body, "close-codes.js must define `export const CloseCode = Object.freeze({...});`"
    entries = re.findall(r"^\s*([A-Z_]+):\s*(\d+),?\s*$", body.group(1), re.M)
    lines = [line for line in body.group(1).splitlines() if line.strip()]
    assert len(entries) == len(lines), "one `NAME: number,` per line, nothing else"
    return {name: int(value) for name, value in entries}


def test_js_module_equals_the_python_enum():
    assert js_close_codes() == {code.name: code.value for code in CloseCode}


def test_wrong_path_is_final_in_the_pages():
    source = JS_MODULE.read_text()
    final = re.search(r"FINAL_CLOSE_CODES = new Set\(\[(.*?)\]\)", source, re.S).group(1)
    assert "CloseCode.WRONG_PATH" in final


def test_no_bare_close_codes_elsewhere_in_static_js():
    bare = re.compile(r"(?<![\w.])40(?:0[1-9]|1[0-9])(?![\w.])")
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(JS_DIR.glob("*.js"))
        if path != JS_MODULE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert offenders == []
