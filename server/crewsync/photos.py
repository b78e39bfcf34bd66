"""Photos crews upload: decoded before they are kept, bounded, stripped of metadata.

A photo is accepted only if Pillow decodes it completely as the type it claims (JPEG, PNG or
WebP): a JPEG signature followed by HTML, or RIFF/WAVE audio sent as WebP, is refused. Its
size and dimensions are bounded before decoding (no decompression bombs). What is kept is a
re-encoded copy without EXIF, XMP or text chunks, turned upright as the EXIF orientation
said: a phone's GPS position, its serial number and the time zone of the crew never leave
the upload. The work order already carries its location, so no job needs the photo's own.

The copy is stored under the sha256 of the bytes the phone sent (the id its mutation
refers to); the stored bytes differ from the sent ones.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from server.errors import ValidationFailed

__all__ = ["MAX_PHOTO_BYTES", "MAX_PHOTO_PIXELS", "MAX_PHOTO_SIDE", "PHOTO_FORMATS", "CleanPhoto", "clean_photo"]

MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_SIDE = 8192
MAX_PHOTO_PIXELS = 40_000_000
PHOTO_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


@dataclass(frozen=True, slots=True)
class CleanPhoto:
    data: bytes
    content_type: str
    width: int
    height: int


def clean_photo(data: bytes, content_type: str) -> CleanPhoto:
    """The photo re-encoded without metadata; ValidationFailed (field `body`) if it is not a
    complete image of `content_type` within the bounds."""
    expected = PHOTO_FORMATS.get(content_type)
    if expected is None:
        raise ValidationFailed(f"photos must be one of {', '.join(sorted(PHOTO_FORMATS))}", field="Content-Type")
    if len(data) > MAX_PHOTO_BYTES:
        raise ValidationFailed(f"a photo is at most {MAX_PHOTO_BYTES} bytes", field="body")
    try:
        with Image.open(io.BytesIO(data), formats=[expected]) as image:
            width, height = image.size
            if width > MAX_PHOTO_SIDE or height > MAX_PHOTO_SIDE or width * height > MAX_PHOTO_PIXELS:
                raise ValidationFailed(
                    f"a photo is at most {MAX_PHOTO_SIDE} px a side and {MAX_PHOTO_PIXELS:,} pixels "
                    f"(this one is {width} x {height})", field="body")
            image.load()  # decodes every byte: a truncated or spoofed file fails here
            upright = ImageOps.exif_transpose(image)
            return _encode(upright, expected, content_type)
    except ValidationFailed:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError):
        raise ValidationFailed(f"the body is not a complete {content_type} image", field="body") from None


def _encode(image: Image.Image, fmt: str, content_type: str) -> CleanPhoto:
    out = io.BytesIO()
    if fmt == "JPEG":
        if image.mode not in {"RGB", "L", "CMYK"}:
            image = image.convert("RGB")
        image.save(out, "JPEG", quality=90, icc_profile=image.info.get("icc_profile"))
    elif fmt == "PNG":
        image.save(out, "PNG", icc_profile=image.info.get("icc_profile"))
    else:
        if image.mode not in {"RGB", "RGBA"}:
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        image.save(out, "WEBP", quality=90, icc_profile=image.info.get("icc_profile"))
    return CleanPhoto(out.getvalue(), content_type, image.width, image.height)
