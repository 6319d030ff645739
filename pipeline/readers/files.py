"""Opening source files: transparent .gz/.zst decompression that notices truncation, and the
source root that ids and `file` columns are relative to."""

from __future__ import annotations

import glob
import gzip
import io
import zlib
from pathlib import Path
from typing import BinaryIO

from pipeline.config import Config, SourceSection

READ_CHUNK = 1 << 16


class _ZstdStream(io.RawIOBase):
    """Decompresses a .zst file (any number of frames); raises EOFError if it ends inside a frame.

    The `zstandard` stream reader returns a short read on a truncated file instead of failing, so
    truncation would go unnoticed; this reader checks that the last frame is complete.
    """

    def __init__(self, fh: BinaryIO):
        import zstandard

        self._fh = fh
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj = None
        self._pending = bytearray()
        self._in_frame = False
        self._input_done = False

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> None:
        while data:
            if self._dobj is None:
                self._dobj = self._dctx.decompressobj()
            self._pending += self._dobj.decompress(data)
            self._in_frame = not self._dobj.eof
            data = self._dobj.unused_data if self._dobj.eof else b""
            if self._dobj.eof:
                self._dobj = None

    def readinto(self, buffer) -> int:
        while not self._pending:
            if self._input_done:
                if self._in_frame:
                    raise EOFError("zstd stream ended before the end of its frame")
                return 0
            chunk = self._fh.read(READ_CHUNK)
            if chunk:
                self._feed(chunk)
            else:
                self._input_done = True
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        del self._pending[:n]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_binary(path: Path) -> BinaryIO:
    """A file's decompressed bytes (.gz and .zst by suffix); truncation raises EOFError while reading."""
    fh = open(path, "rb")  # noqa: SIM115 - handed to the wrapper, closed with it
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=fh, mode="rb")
    if path.name.endswith(".zst"):
        return io.BufferedReader(_ZstdStream(fh), buffer_size=READ_CHUNK)
    return fh


def stream_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    return (gzip.BadGzipFile, zlib.error, zstandard.ZstdError)


def source_root(cfg: Config, source: SourceSection) -> Path:
    """The directory ids and `file` columns are relative to: the directory, the file's parent, or
    the part of a glob before its first wildcard."""
    raw = Path(source.path).expanduser()
    path = raw if raw.is_absolute() else cfg.base_dir / raw
    if glob.has_magic(str(path)):
        parts = []
        for part in path.parts:
            if glob.has_magic(part):
                break
            parts.append(part)
        return Path(*parts).resolve()
    path = path.resolve()
    return path if path.is_dir() else path.parent
