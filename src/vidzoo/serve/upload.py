"""Uploads: a multipart body streamed into a private file, with the size limit enforced while
it arrives, and the container recognised by its first bytes, not by its name.

The file's name is the request id, inside the server's own temporary directory (mode 0700):
nothing the client sends (file name, field names) ever becomes part of a path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["UploadError", "Upload", "receive_upload", "sniff_container", "mp4_truncation"]

FILE_FIELD = "file"
MAX_FRAMING_BYTES = 64 * 1024  # what the body may hold besides the file: boundaries, headers, small fields


class UploadError(Exception):
    """The body is not an acceptable upload: `status` and `code` for the HTTP answer."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Upload:
    path: Path
    size: int  # bytes of the video file
    filename: str  # as the client named it: for messages only, never for paths
    body_bytes: int  # bytes of the whole request body read


async def receive_upload(chunks: AsyncIterator[bytes], content_type: str | None, path: Path, max_bytes: int) -> Upload:
    """Write the multipart field ``file`` of the body arriving as `chunks` to `path` (created
    new, mode 0600). Raises UploadError (413) as soon as the file passes `max_bytes`, or when the
    body is not multipart or has no file. The caller deletes `path` whatever happens."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(415, "not_multipart", "send the video as multipart/form-data with the field 'file'")
    state = _PartState()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        parser = MultipartParser(boundary, state.callbacks(fd, max_bytes))
        body = 0
        async for chunk in chunks:
            body += len(chunk)
            parser.write(chunk)
            # Other fields are dropped, but their bytes count: the body as a whole is bounded too.
            if state.too_large or body > max_bytes + MAX_FRAMING_BYTES:
                raise UploadError(413, "too_large", f"the upload passes the limit of {max_bytes} bytes")
        parser.finalize()
    except ValueError as e:  # python-multipart's parse errors
        raise UploadError(400, "bad_multipart", f"the multipart body cannot be parsed ({e})") from e
    finally:
        os.close(fd)
    if state.file_parts == 0:
        raise UploadError(422, "no_file", "the multipart body has no field 'file' with a file in it")
    if state.file_parts > 1:
        raise UploadError(422, "several_files", "send one video per request (one field 'file')")
    if state.size == 0:
        raise UploadError(422, "empty_file", "the uploaded file is empty (0 bytes)")
    return Upload(path, state.size, state.filename, body)


class _PartState:
    """Callbacks for python-multipart's streaming parser: keeps the file part, drops the rest."""

    def __init__(self):
        self.size, self.file_parts, self.filename, self.too_large = 0, 0, "", False
        self._headers: dict[str, str] = {}
        self._field, self._value = b"", b""
        self._writing = False

    def callbacks(self, fd: int, max_bytes: int) -> dict:
        # python-multipart bounds the size of a part's headers itself (a ValueError past it).
        def on_part_begin():
            self._headers, self._writing = {}, False

        def on_header_field(data, start, end):
            self._field += data[start:end]

        def on_header_value(data, start, end):
            self._value += data[start:end]

        def on_header_end():
            self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
            self._field, self._value = b"", b""

        def on_headers_finished():
            _, params = parse_options_header(self._headers.get("content-disposition", ""))
            if params.get(b"name") == FILE_FIELD.encode() and b"filename" in params:
                self.file_parts += 1
                self.filename = params[b"filename"].decode("utf-8", "replace")[-200:]
                self._writing = self.file_parts == 1

        def on_part_data(data, start, end):
            if not self._writing or self.too_large:
                return
            self.size += end - start
            if self.size > max_bytes:
                self.too_large = True
                return
            view = memoryview(data)[start:end]
            while view:
                view = view[os.write(fd, view):]

        return {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                "on_header_value": on_header_value, "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished, "on_part_data": on_part_data}


# First bytes of the containers FFmpeg is allowed to open. Text formats (playlists, concat lists,
# SDP) never reach it: they can make FFmpeg open other files or URLs.
def sniff_container(head: bytes) -> str | None:
    """The container family that the file's first bytes say, or None when they say no video
    container (an image, a text file, random bytes...)."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if len(head) >= 377 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    return None


def mp4_truncation(path: str | os.PathLike) -> str | None:
    """For an MP4/MOV file: a sentence saying where it is cut short when a top-level box
    declares more bytes than the file has left, else None. (FFmpeg only says "invalid data"
    when the cut removed the index at the end, and may decode a cut file without a word.)"""
    size = os.path.getsize(path)
    offset = 0
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            box_size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:  # the last box, to the end of the file
                return None
            if box_size < 8:
                return None  # not a box structure we can follow: leave it to FFmpeg
            if offset + box_size > size:
                return (f"the file is truncated: its {kind!r} box needs {offset + box_size} bytes, "
                        f"the upload has {size}")
            offset += box_size
    return None
