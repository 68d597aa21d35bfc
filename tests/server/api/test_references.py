"""`POST /api/references`: uploads checked for size, format and dimensions."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.server.api.requests import MAX_UPLOAD, detail, png, png_header_only, upload


def test_upload_a_reference(client: TestClient) -> None:
    response = upload(client, png(300, 200))
    assert response.status_code == 201
    body = response.json()
    assert (body["width"], body["height"]) == (300, 200) and len(body["reference_id"]) >= 22


def test_reference_not_multipart(client: TestClient) -> None:
    response = client.post("/api/references", content=png(32, 32), headers={"Content-Type": "image/png"})
    assert response.status_code == 415 and "multipart/form-data" in detail(response)


def test_reference_missing_file_field(client: TestClient) -> None:
    response = client.post("/api/references", data={"picture": "x"}, files={"other": ("a.png", png(32, 32))})
    assert response.status_code == 422 and "'file'" in detail(response)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 415, "upload is empty"),
        (b"%PDF-1.4 not an image at all" * 10, 415, "not an image"),
        (png(64, 64)[:80], 415, "corrupt or truncated"),
        (png_header_only(100_000, 100_000), 422, "dimensions"),
        (png_header_only(2000, 1000), 422, "at most 1000000 pixels"),
        (png(400, 8), 422, "aspect ratio"),
        (png(4, 4), 422, "at least 8 pixels"),
    ],
)
def test_reference_bad_images(client: TestClient, data: bytes, status: int, message: str) -> None:
    response = upload(client, data)
    assert response.status_code == status and message in detail(response), response.text


def test_reference_too_large(client: TestClient) -> None:
    # Over the limit in bytes: refused by its Content-Length before the body is read ...
    response = upload(client, b"\0" * (MAX_UPLOAD + 100_000))
    assert response.status_code == 413 and "limit" in detail(response)
    # ... or once read, when it is only a little over.
    response = upload(client, b"\0" * (MAX_UPLOAD + 10))
    assert response.status_code == 413 and f"the limit is {MAX_UPLOAD} bytes" in detail(response)


def test_reference_file_name_is_never_a_path(client: TestClient) -> None:
    response = upload(client, png(32, 32), name="../../etc/passwd")
    assert response.status_code == 201
