"""The payment code drawn as a QR code and a Code 128 barcode, as SVG, on the server."""

from __future__ import annotations

import base64
import io

import barcode
import segno
from barcode.writer import SVGWriter


def _data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


def qr_svg(text: str, *, scale: int = 6) -> str:
    """A data: URI of the QR code (error correction M, as registers scan from phones)."""
    out = io.BytesIO()
    segno.make_qr(text, error="m").save(out, kind="svg", scale=scale, border=4, xmldecl=False)
    return _data_uri(out.getvalue())


def barcode_svg(code: str) -> str:
    """A data: URI of the Code 128 barcode; the page prints the digits as text beside it."""
    out = io.BytesIO()
    barcode.get("code128", code, writer=SVGWriter()).write(
        out, options={"module_height": 18.0, "write_text": False, "quiet_zone": 4.0}
    )
    return _data_uri(out.getvalue())
