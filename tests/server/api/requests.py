"""Requests and answers of the API tests: image files, uploads, error details."""

from __future__ import annotations

import io
import struct
import zlib

from fastapi.testclient import TestClient
from PIL import Image

MAX_UPLOAD = 300_000


def png(width: int, height: int, color=(200, 100, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A small PNG file whose header claims `width` x `height` (its pixel data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def upload(client: TestClient, data: bytes, name: str = "character.png", content_type: str = "image/png"):
    return client.post("/api/references", files={"file": (name, data, content_type)})


def detail(response) -> str:
    return response.json()["detail"]
