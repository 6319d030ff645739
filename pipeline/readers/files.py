"""Opening source files: transparent .gz/.zst decompression that notices truncation and stays in
bounded memory whatever the input (a decompression bomb stops the file with a reason), bounded line
reading, and the source root that ids and `file` columns are relative to."""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.config import CollectSection, Config, SourceSection

READ_CHUNK = 1 << 16
# Compressed bytes handed to zstd per call: a zstd frame can inflate ~32,000-fold (RLE blocks), so
# this bounds what one call can produce to ~32 MB; gzip's reader bounds its output by itself.
ZSTD_FEED = 1 << 10
RATIO_CHECK_AFTER = 8 << 20  # the ratio is judged once this much came out (small files vary)


class DecompressionLimitError(Exception):
    """A compressed file inflates past `collect.max_decompressed_bytes` or `max_compression_ratio`."""


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
            chunk = self._fh.read(ZSTD_FEED)
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


class _Limited(io.RawIOBase):
    """Counts what a decompressor hands out; raises DecompressionLimitError past the per-file limits."""

    def __init__(self, inner: BinaryIO, compressed: BinaryIO, collect: CollectSection):
        self._inner = inner
        self._compressed = compressed
        self._max_bytes = collect.max_decompressed_bytes
        self._max_ratio = collect.max_compression_ratio
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.produced += n
        if self.produced > self._max_bytes:
            raise DecompressionLimitError(
                f"inflates past {self._max_bytes} bytes (collect.max_decompressed_bytes)"
            )
        if self.produced > RATIO_CHECK_AFTER:
            consumed = max(self._compressed.tell(), 1)
            if self.produced > self._max_ratio * consumed:
                raise DecompressionLimitError(
                    f"inflates {self.produced / consumed:.0f}-fold ({consumed} compressed bytes gave "
                    f"{self.produced}), more than collect.max_compression_ratio {self._max_ratio:g}: "
                    f"a decompression bomb?"
                )
        return n

    def close(self) -> None:
        self._inner.close()
        super().close()


def open_binary(path: Path, collect: CollectSection | None = None) -> BinaryIO:
    """A file's decompressed bytes (.gz, .bz2 and .zst by suffix); truncation raises EOFError while reading,
    and inflating past `collect`'s per-file limits raises DecompressionLimitError."""
    fh = open(path, "rb")  # noqa: SIM115 - handed to the wrapper, closed with it
    if path.name.endswith(".bz2"):
        stream: BinaryIO = bz2.BZ2File(fh, mode="rb")
    elif path.name.endswith(".gz"):
        stream = gzip.GzipFile(fileobj=fh, mode="rb")
    elif path.name.endswith(".zst"):
        stream = io.BufferedReader(_ZstdStream(fh), buffer_size=READ_CHUNK)
    else:
        return fh
    limited = _Limited(stream, fh, collect or CollectSection())
    return io.BufferedReader(limited, buffer_size=READ_CHUNK)


def bounded_lines(fh: BinaryIO, max_bytes: int) -> Iterator[bytes | None]:
    """The lines of a binary stream, each read with at most `max_bytes + 1` bytes in memory; a longer
    line is skipped to its end and yields None in its place (line numbers stay right)."""
    while True:
        line = fh.readline(max_bytes + 1)
        if not line:
            return
        if len(line) <= max_bytes:
            yield line
            continue
        while not line.endswith(b"\n"):  # skip the rest of the oversized line, a bounded piece at a time
            line = fh.readline(READ_CHUNK)
            if not line:
                break
        yield None


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
