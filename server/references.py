"""Character images ("references") uploaded by clients, kept in memory under unguessable ids.

An upload is checked in steps, cheapest first: its size in bytes, then the image header
(format and dimensions, read without decoding the pixels), and only then the full decode.
Nothing a client sends is ever used as a file path.
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rain_core.stream.engine import QueueModel
from rain_core.stream.reference_encoder import ReferenceEncoding, ReferenceImageError, as_rgb_image
from server.media.alpha import RGB, key_colour
from server.tokens import new_token

# Kept images are scaled down to this side at most: the encoders resize to the model's size anyway.
STORED_MAX_SIDE = 1024
MIN_SIDE = 8
MAX_ASPECT = 10.0


class UploadError(ValueError):
    """A reference upload that is refused; subclasses say which way."""


class NotAnImage(UploadError):
    pass


class UploadTooLarge(UploadError):
    pass


class BadDimensions(UploadError):
    pass


class UnknownReference(KeyError):
    def __str__(self) -> str:
        return "unknown or expired reference_id"


def decode_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Bytes of an uploaded file -> an RGB image, or an `UploadError` saying what is wrong."""
    if len(data) > max_bytes:
        raise UploadTooLarge(f"reference image is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise NotAnImage("reference upload is empty")
    try:
        # Opening reads the header only; Pillow refuses outright what it deems a decompression bomb.
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise BadDimensions(f"reference image dimensions are absurd: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise NotAnImage(
            "reference upload is not an image in a format the server reads (PNG, JPEG, WebP, ...)"
        ) from None
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE or width * height > max_pixels or long > MAX_ASPECT * short:
        raise BadDimensions(
            f"reference image is {width}x{height}; it needs sides of at least {MIN_SIDE} pixels, at most "
            f"{max_pixels} pixels in all and an aspect ratio within {MAX_ASPECT:g}:1"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
        image = as_rgb_image(image, max_pixels=max_pixels)
    except ReferenceImageError as exc:
        raise BadDimensions(str(exc)) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise NotAnImage(f"reference image data is corrupt or truncated ({exc})") from None
    image.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE))
    return image


def load_reference_file(path: Path) -> Image.Image:
    """The server's own default reference (a path from the settings, never from a client)."""
    return decode_upload(path.read_bytes(), max_bytes=1 << 62, max_pixels=1 << 62)


def grey_card(size: int = 512) -> Image.Image:
    """The character when none was given: plain mid-grey."""
    return Image.new("RGB", (size, size), (128, 128, 128))


@dataclass(eq=False)
class Reference:
    id: str
    image: Image.Image
    last_used: float = field(default_factory=time.monotonic)
    _encoding: ReferenceEncoding | None = None
    _key_colour: RGB | None = None

    def encoding(self, model: QueueModel) -> ReferenceEncoding:
        """CLIP context and latents, computed once (call it on the model worker)."""
        if self._encoding is None:
            self._encoding = model.encode_reference(self.image)
        return self._encoding

    def key_colour(self) -> RGB:
        """Its background's colour, read from its border (computed once; a few thousand pixels)."""
        if self._key_colour is None:
            self._key_colour = key_colour(self.image)
        return self._key_colour


class ReferenceStore:
    """Uploaded references, the least recently used dropped beyond `max_items` or after `ttl` seconds unused.

    A session holds its `Reference` object, so dropping one from the store never breaks a stream.
    """

    def __init__(self, *, max_items: int, ttl: float):
        self.max_items = max_items
        self.ttl = ttl
        self._items: OrderedDict[str, Reference] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, image: Image.Image, reference_id: str | None = None) -> Reference:
        """Store `image` under a new id, or under `reference_id` (a copy of one kept elsewhere)."""
        reference = Reference(id=reference_id or new_token(), image=image)
        with self._lock:
            self._expire()
            self._items[reference.id] = reference
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return reference

    def get(self, reference_id: str) -> Reference:
        with self._lock:
            self._expire()
            reference = self._items.get(reference_id)
            if reference is None:
                raise UnknownReference(reference_id)
            reference.last_used = time.monotonic()
            self._items.move_to_end(reference_id)
            return reference

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _expire(self) -> None:
        limit = time.monotonic() - self.ttl
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.last_used >= limit:
                break
            self._items.popitem(last=False)
