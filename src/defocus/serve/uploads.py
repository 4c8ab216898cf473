"""Reading uploaded images from a request: the multipart field ``file`` or the raw body, with byte limits."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from starlette.datastructures import UploadFile
from starlette.requests import Request

from .settings import MULTIPART_OVERHEAD


class ServeError(Exception):
    """A request the server refuses: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers or {}
        super().__init__(message)


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name the client gave it and its bytes."""

    filename: str
    data: bytes


#: What an upload without a byte is.
EMPTY_UPLOAD = "empty upload (0 bytes)"


def _too_large(what: str, limit: str) -> ServeError:
    return ServeError(413, f"{what} is larger than the limit of {limit}")


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


async def read_body(request: Request, limit: int, limit_text: str | None = None) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes (declared or actually sent);
    ``limit_text`` says the limit in the user's terms (default: ``limit`` in MiB)."""
    limit_text = limit_text or _mib(limit)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large("request body", limit_text)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large("request body", limit_text)
        chunks.append(chunk)
    return b"".join(chunks)


def _replaying(body: bytes):
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def header_filename(value: str | None) -> str:
    """The name given in an ``X-Filename`` header: percent-decoded (``f%C3%B6t%C3%B6.jpg``), and UTF-8 sent as
    is (HTTP hands header bytes over as Latin-1) read as UTF-8; ``"upload"`` when there is none."""
    if not value:
        return "upload"
    try:
        value = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return unquote(value) or "upload"


async def read_uploads(request: Request, max_files: int, max_bytes: int) -> list[Upload]:
    """The images of a request: every multipart field named ``file``, or else the whole body as one image
    (its name from the ``X-Filename`` header). Each must be at most ``max_bytes``; an empty one fails the request
    when it is its only image (``max_files`` 1), and is left to the batch to report in its place otherwise."""
    if not _is_multipart(request):
        body = await read_body(request, max_bytes)
        uploads = [Upload(header_filename(request.headers.get("x-filename")), body)]
    else:
        per_image = _mib(max_bytes) + ("" if max_files == 1 else f" per image, {max_files} images")
        body = await read_body(request, max_files * (max_bytes + MULTIPART_OVERHEAD), per_image)
        form = await Request(request.scope, receive=_replaying(body)).form(max_files=max_files, max_fields=16)
        try:
            parts = form.getlist("file")
            if any(not isinstance(p, UploadFile) for p in parts):
                raise ServeError(400, "multipart field 'file' must be a file upload, not a text value")
            uploads = [Upload(p.filename or "upload", await p.read()) for p in parts]
        finally:
            await form.close()
        if not uploads:
            raise ServeError(400, "no image: send it in the multipart field 'file', or as the request body")
    if len(uploads) > max_files:
        raise ServeError(400, f"too many images ({len(uploads)}); at most {max_files} per request")
    for up in uploads:
        if not up.data and max_files == 1:
            raise ServeError(400, f"{up.filename}: {EMPTY_UPLOAD}")
        if len(up.data) > max_bytes:
            raise _too_large(up.filename, _mib(max_bytes))
    return uploads
