"""The cluster's reference library: characters uploaded through any ingress replica, for sessions
on any avatar replica.

One small deployment, placed on the head node (it outlives any other node), holds the uploads,
checked and kept exactly as a single box keeps them (`decode_upload` with the same limits, a
`ReferenceStore` with the same count and expiry, content-addressed ids); an avatar replica
fetches an image by id the first time one of its sessions names it and keeps a copy under the
same id. With `REFERENCES_DIR` on storage every node mounts, the uploads are files there too:
they outlive the library's restart, and the replicas read them from there first.
"""

from __future__ import annotations

import asyncio

from PIL import Image

from server.cluster.remote import answer, log_to_stderr
from server.core.config import Settings
from server.references import ReferenceStore
from server.runtime import UploadedReference


class ReferenceLibrary:
    """Serve deployment class: the uploaded references of the whole cluster."""

    def __init__(self, settings: Settings):
        log_to_stderr(settings.LOG_LEVEL)
        self.settings = settings
        self.store = ReferenceStore(
            max_items=settings.MAX_REFERENCES, ttl=settings.REFERENCE_TTL, directory=settings.REFERENCES_DIR
        )

    async def upload(self, data: bytes) -> UploadedReference:
        return await answer("upload_reference", self._upload(data))

    async def _upload(self, data: bytes) -> UploadedReference:
        settings = self.settings
        reference = await asyncio.to_thread(
            self.store.add_upload, data, max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_REFERENCE_PIXELS
        )
        return UploadedReference(reference.id, reference.image.width, reference.image.height)

    async def image(self, reference_id: str) -> Image.Image:
        """The checked image (at most 1024 pixels a side); refused `UnknownReference` if none has that id."""
        return await answer("image", self._image(reference_id))

    async def _image(self, reference_id: str) -> Image.Image:
        return (await asyncio.to_thread(self.store.get, reference_id)).image

    async def count(self) -> int:
        return len(self.store)
