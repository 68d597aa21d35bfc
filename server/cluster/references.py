"""The cluster's reference library: characters uploaded through any ingress replica, for sessions
on any avatar replica.

One small deployment holds the uploads, checked and kept exactly as a single box keeps them
(`decode_upload` with the same limits, a `ReferenceStore` with the same size and expiry); an
avatar replica fetches an image by id the first time one of its sessions names it and keeps a
copy under the same id. Ray restarts the library if it dies; what was uploaded before is then
gone, as on a single box's restart (clients get 404 for the old ids and upload again).
"""

from __future__ import annotations

import asyncio

from PIL import Image

from server.api.runtime_api import UploadedReference
from server.core.config import Settings
from server.references import ReferenceStore, decode_upload


class ReferenceLibrary:
    """Serve deployment class: the uploaded references of the whole cluster."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = ReferenceStore(max_items=settings.MAX_REFERENCES, ttl=settings.REFERENCE_TTL)

    async def upload(self, data: bytes) -> UploadedReference:
        image = await asyncio.to_thread(
            decode_upload, data, max_bytes=self.settings.MAX_UPLOAD_BYTES,
            max_pixels=self.settings.MAX_REFERENCE_PIXELS,
        )
        reference = self.store.add(image)
        return UploadedReference(reference.id, image.width, image.height)

    async def image(self, reference_id: str) -> Image.Image:
        """The checked image (at most 1024 pixels a side); `UnknownReference` if none has that id."""
        return self.store.get(reference_id).image

    async def count(self) -> int:
        return len(self.store)
