"""Request bodies with images: multipart files, base64 in JSON, or one image as the whole
body, read within the limits.

Each form gives a :class:`Payload`: the uploads of each image field and the other fields.
A body of type ``image/*`` or ``application/octet-stream`` is one image, for the endpoint's
first image field, with the other fields in the query string (``?k=5&far=1e-4``): no
multipart to build or parse, for clients that send one photo at a time.
JSON image fields take a base64 string (a ``data:`` URL is fine), an object
``{"name": ..., "data": base64}``, or a list of those. Multipart text fields are read as JSON
when they parse (so ``embedding1=[0.1, ...]`` works), else kept as text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..errors import ImageError, InvalidArgumentError, NpcfaceError, TooManyImagesError
from ..image import describe


@dataclass(frozen=True)
class Upload:
    """One image of a request: ``ref`` names it in the API (``images[2]``), ``label`` in
    messages (the file name when there is one)."""

    ref: str
    label: str
    data: bytes


@dataclass
class Payload:
    """A parsed request body."""

    uploads: dict[str, list[Upload]] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def images(self, name: str) -> list[Upload]:
        return self.uploads.get(name, [])

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.uploads.values())


def payload_reader(
    image_fields: tuple[str, ...],
) -> Callable[[Request], Awaitable[Payload]]:
    """A dependency that parses the body into a :class:`Payload` with those image fields."""

    async def read(request: Request) -> Payload:
        settings = request.app.state.settings
        ctype = request.headers.get("content-type", "")
        media = ctype.partition(";")[0].strip().lower()  # media types are case-insensitive
        if media == "multipart/form-data":
            payload = await _from_multipart(request, image_fields, settings.max_images)
        elif media in ("application/json", "") or media.endswith("+json"):
            payload = await _from_json(request, image_fields)
        elif media.startswith(RAW_TYPES):
            payload = await _from_raw(request, image_fields[0])
        else:
            raise InvalidArgumentError(
                f"unsupported content type {ctype!r}: send multipart/form-data, "
                "application/json, or one image as an image/* body",
            )
        if payload.count > settings.max_images:
            raise TooManyImagesError(
                f"{payload.count} images in one request; the limit is {settings.max_images} "
                "(the server's --max-images)",
            )
        request.app.state.metrics.images.inc(payload.count)
        return payload

    return read


async def _from_multipart(
    request: Request, image_fields: tuple[str, ...], max_images: int
) -> Payload:
    try:
        # starlette's own bounds, far above ours: the images are counted after parsing
        form = await request.form(max_files=4 * max_images + 8, max_fields=256)
    except HTTPException as exc:
        raise InvalidArgumentError(f"bad multipart body: {exc.detail}") from None
    out = Payload()
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in image_fields:
                    raise InvalidArgumentError(
                        f"unexpected file field {key!r}; this endpoint takes "
                        f"{', '.join(image_fields)}",
                        input=key,
                    )
                items = out.uploads.setdefault(key, [])
                ref = f"{key}[{len(items)}]"
                data = await value.read()
                items.append(Upload(ref, value.filename or ref, data))
            elif key in image_fields:
                raise InvalidArgumentError(
                    f"{key}: sent as a text field; send the image as a file part "
                    f"(curl -F '{key}=@photo.jpg'), or base64 in a JSON body",
                    input=key,
                )
            else:
                out.fields[key] = _text_value(value)
    finally:
        await form.close()
    return out


RAW_TYPES = ("image/", "application/octet-stream")
"""Content types whose body is one image (:func:`_from_raw`)."""


async def _from_raw(request: Request, image_field: str) -> Payload:
    """The body as one image for ``image_field`` (named by ``Content-Disposition``'s
    filename when given); the query string's fields as the other fields, read like
    multipart text fields."""
    data = await request.body()
    out = Payload()
    for key, value in request.query_params.multi_items():
        if key == image_field:
            raise InvalidArgumentError(
                f"{key}: the body is the image; do not give it in the query string",
                input=key,
            )
        out.fields[key] = _text_value(value)
    ref = f"{image_field}[0]"
    out.uploads[image_field] = [Upload(ref, _filename(request) or ref, data)]
    return out


def _filename(request: Request) -> str | None:
    """The filename of a ``Content-Disposition`` header (RFC 6266, ``filename*`` too)."""
    value = request.headers.get("content-disposition")
    if not value:
        return None
    msg = Message()
    msg["content-disposition"] = value
    return msg.get_filename()


def _text_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _from_json(request: Request, image_fields: tuple[str, ...]) -> Payload:
    raw = await request.body()
    if not raw:
        return Payload()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgumentError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgumentError("request body must be a JSON object")
    out = Payload()
    for key, value in body.items():
        if key not in image_fields:
            out.fields[key] = value
            continue
        values = value if isinstance(value, list) else [value]
        out.uploads[key] = [
            _from_base64(v, f"{key}[{i}]" if isinstance(value, list) else key)
            for i, v in enumerate(values)
            if v is not None
        ]
    return out


def _from_base64(value: Any, ref: str) -> Upload:
    label = ref
    if isinstance(value, dict):
        label = str(value.get("name") or ref)
        value = value.get("data")
    if not isinstance(value, str):
        raise _named(ImageError("expected a base64 string"), label, ref)
    try:
        data = decode_base64(value)
    except ValueError as exc:
        raise _named(ImageError(f"not valid base64: {exc}"), label, ref) from None
    return Upload(ref, label, data)


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_URLSAFE = str.maketrans("-_", "+/")


def decode_base64(text: str) -> bytes:
    """Base64 as clients send it: the standard or the URL-safe alphabet, padded or not,
    broken into lines (MIME's 76 columns, CRLF) or spaced, bare or as a ``data:`` URL.

    Raises:
        ValueError: the reason it is not base64 (a character and its position, a length
            that no bytes have, a mix of alphabets, a ``data:`` URL that is not base64).
    """
    if text[:5].lower() == "data:":
        header, comma, text = text.partition(",")
        if not comma:
            raise ValueError("a data: URL without ',' before its data")
        if ";base64" not in header.lower():
            raise ValueError(f"the data: URL is not base64 ({header!r} lacks ';base64')")
    s = "".join(text.split())  # line breaks and spaces anywhere
    if not s:
        raise ValueError("empty")
    if "-" in s or "_" in s:
        if "+" in s or "/" in s:
            raise ValueError("mixes the standard (+ /) and URL-safe (- _) alphabets")
        s = s.translate(_URLSAFE)
    body = s.rstrip("=")
    if len(s) - len(body) > 2:
        raise ValueError(f"{len(s) - len(body)} padding '=' at the end (at most 2)")
    for i, c in enumerate(body):
        if c not in _B64:
            raise ValueError(f"character {c!r} at position {i} is not base64")
    if len(body) % 4 == 1:
        raise ValueError(f"{len(body)} characters are no whole number of bytes (cut short?)")
    return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)


def _named(exc: NpcfaceError, label: str, ref: str, was: str | None = None) -> NpcfaceError:
    """``exc`` (same class) with its message naming ``label`` and ``input`` set to ``ref``."""
    text = str(exc)
    if was and text.startswith(was):
        text = f"{label}{text[len(was) :]}"
    elif not text.startswith(label):
        text = f"{label}: {text}"
    new = type(exc).__new__(type(exc))
    Exception.__init__(new, text)
    new.__dict__.update(exc.__dict__)
    return new.about(ref)


def rename(exc: NpcfaceError, upload: Upload) -> NpcfaceError:
    """A pipeline error about an upload's bytes, naming the upload instead (same class)."""
    return _named(exc, upload.label, upload.ref, describe(upload.data))
