"""Character images ("references") uploaded by clients, kept in memory under content-addressed ids,
and, with `REFERENCES_DIR`, as files that every process sharing the directory reads.

An upload is checked in steps, cheapest first: its size in bytes, then the image header
(format and dimensions, read without decoding the pixels), and only then the full decode.
An id is 128 bits of the SHA-256 of the checked image (its mode, size and pixels): the same
picture uploaded twice, or on two nodes, is one reference. A client's id is used as a file name
only once it matches that form.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import re
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

logger = logging.getLogger(__name__)
# Kept images are scaled down to this side at most: the encoders resize to the model's size anyway.
STORED_MAX_SIDE = 1024
MIN_SIDE = 8
MAX_ASPECT = 10.0
# What a reference id looks like (`content_id`); anything else is unknown without a look at the disk.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")


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


def content_id(image: Image.Image) -> str:
    """The id of a checked image: 128 bits of the SHA-256 of its mode, size and pixels, base64url."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return base64.urlsafe_b64encode(digest.digest()[:16]).decode().rstrip("=")


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

    With a `directory`, each is also a PNG file there (`<id>.png`, written whole then renamed), its
    modification time its last use: the same limits hold for the files, and a reference this
    process does not hold is read from there. A session holds its `Reference` object, so dropping
    one from the store never breaks a stream.
    """

    def __init__(self, *, max_items: int, ttl: float, directory: Path | None = None):
        self.max_items = max_items
        self.ttl = ttl
        self.directory = directory
        self._items: OrderedDict[str, Reference] = OrderedDict()
        self._lock = threading.Lock()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)  # a directory we cannot make fails the start, loudly

    def __len__(self) -> int:
        if self.directory is not None:
            return len(self._files())
        return len(self._items)

    def add(self, image: Image.Image, reference_id: str | None = None) -> Reference:
        """Store `image` under its content's id, or under `reference_id` (a copy of one kept elsewhere)."""
        reference = Reference(id=reference_id or content_id(image), image=image)
        with self._lock:
            self._expire()
            self._items[reference.id] = reference
            self._items.move_to_end(reference.id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        if self.directory is not None:
            self._write(reference)
        return reference

    def add_upload(self, data: bytes, *, max_bytes: int, max_pixels: int) -> Reference:
        """An uploaded file, checked (`decode_upload`) and stored; it decodes: call it off the event loop."""
        return self.add(decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels))

    def get(self, reference_id: str) -> Reference:
        with self._lock:
            self._expire()
            reference = self._items.get(reference_id)
            if reference is not None:
                reference.last_used = time.monotonic()
                self._items.move_to_end(reference_id)
        if self.directory is None:
            if reference is None:
                raise UnknownReference(reference_id)
            return reference
        if not ID_PATTERN.match(reference_id):
            raise UnknownReference(reference_id)
        path = self.directory / f"{reference_id}.png"
        try:
            if time.time() - path.stat().st_mtime > self.ttl:
                raise UnknownReference(reference_id)
            os.utime(path)  # used now, by whichever process: its time to live starts again
            if reference is None:
                with Image.open(path) as stored:
                    image = stored.convert("RGB")
                reference = Reference(id=reference_id, image=image)
                with self._lock:
                    self._items[reference_id] = reference
                    while len(self._items) > self.max_items:
                        self._items.popitem(last=False)
        except (FileNotFoundError, UnidentifiedImageError):
            raise UnknownReference(reference_id) from None
        return reference

    def clear(self) -> None:
        """Forget what this process holds (the files stay, for the others)."""
        with self._lock:
            self._items.clear()

    def _expire(self) -> None:
        limit = time.monotonic() - self.ttl
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.last_used >= limit:
                break
            self._items.popitem(last=False)

    # The directory ---------------------------------------------------------------------
    def _files(self) -> list[Path]:
        assert self.directory is not None
        return [p for p in self.directory.iterdir() if p.suffix == ".png" and ID_PATTERN.match(p.stem)]

    def _write(self, reference: Reference) -> None:
        assert self.directory is not None
        path = self.directory / f"{reference.id}.png"
        if path.exists():
            os.utime(path)
        else:
            # Written under a temporary name, then renamed: a reader never sees half a file.
            partial = self.directory / f".{reference.id}.{new_token()}.part"
            reference.image.save(partial, format="PNG")
            os.replace(partial, path)
        self._prune()

    def _prune(self) -> None:
        """The files past their time to live, and the least recently used beyond `max_items`."""
        dated = []
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):
                dated.append((path.stat().st_mtime, path))
        dated.sort()
        now = time.time()
        for index, (mtime, path) in enumerate(dated):
            if now - mtime > self.ttl or index < len(dated) - self.max_items:
                path.unlink(missing_ok=True)
                logger.info("dropped reference %s (expired, or beyond %d kept)", path.stem, self.max_items)
