"""Character images: upload once, use by id in offers and mid-stream swaps."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from server.api.deps import RuntimeDep, SettingsDep

router = APIRouter(prefix="/references", tags=["references"])

# Room for the multipart boundaries and headers around the file.
MULTIPART_OVERHEAD = 64 * 1024

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


class ReferenceCreated(BaseModel):
    reference_id: str
    width: int
    height: int


@router.post(
    "",
    status_code=201,
    openapi_extra=UPLOAD_BODY,
    responses={413: {"description": "too large"}, 415: {"description": "not an image"},
               422: {"description": "absurd dimensions or no file"}},
)
async def upload_reference(request: Request, settings: SettingsDep, runtime: RuntimeDep) -> ReferenceCreated:
    """Upload a character image (multipart/form-data, field `file`)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send the image as multipart/form-data in a field named 'file'")
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "multipart field 'file' (the image) is missing")
        # One byte over the limit is enough to refuse it (with the file's own size limit in the message).
        data = await upload.read(settings.MAX_UPLOAD_BYTES + 1)
    finally:
        await form.close()
    reference = await runtime.upload_reference(data)
    return ReferenceCreated(reference_id=reference.reference_id, width=reference.width, height=reference.height)
