"""The final shard layout and its manifest: the contract between the shards stage and training.

OUT/shards/data/<split>/family=<family>/language=<code>/part-NNNNN.parquet
OUT/shards/manifest.json   schema version, config hash, scheme, and per file: path, rows, tokens, bytes, sha256
OUT/shards/README.md       Hugging Face dataset card
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import atomic
from pipeline.handoff import HandoffError
from pipeline.schema import SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ShardFile:
    path: str  # relative to the shards directory
    split: str
    family: str
    language: str
    rows: int
    tokens: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    config_hash: str
    scheme: str
    files: list[ShardFile] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def totals(self) -> dict[str, int]:
        return {
            "files": len(self.files),
            "rows": sum(f.rows for f in self.files),
            "tokens": sum(f.tokens for f in self.files),
            "bytes": sum(f.bytes for f in self.files),
        }

    def select(
        self,
        split: str | None = None,
        languages: list[str] | None = None,
        families: list[str] | None = None,
    ) -> list[ShardFile]:
        return [
            f
            for f in self.files
            if (split is None or f.split == split)
            and (not languages or f.language in languages)
            and (not families or f.family in families)
        ]

    def to_json(self) -> str:
        data = {
            "schema_version": self.schema_version,
            "config_hash": self.config_hash,
            "scheme": self.scheme,
            "totals": self.totals,
            "files": [asdict(f) for f in self.files],
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def shard_relpath(split: str, family: str, language: str, index: int) -> str:
    return f"data/{split}/family={family}/language={language}/part-{index:05d}.parquet"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(shards_dir: Path, manifest: Manifest) -> Path:
    path = Path(shards_dir) / MANIFEST_NAME
    atomic.write_text(path, manifest.to_json())
    return path


class ManifestError(HandoffError, ValueError):
    """The manifest, or a shard file it lists, cannot be trusted; the message names the file."""


REDO_SHARDS = "written by stage 'shards': redo it with `python -m pipeline run shards --force` (same --config and --out)"


def load_manifest(shards_dir: str | Path) -> Manifest:
    """The manifest, every listed path checked to stay inside `shards_dir`."""
    path = Path(shards_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shard manifest (run `make shards` first)")
    try:
        data = json.loads(path.read_text())
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ManifestError(
                f"{path}: schema version {data.get('schema_version')} but this code reads {SCHEMA_VERSION}"
            )
        manifest = Manifest(
            config_hash=data["config_hash"],
            scheme=data["scheme"],
            files=[ShardFile(**f) for f in data["files"]],
            schema_version=data["schema_version"],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(
            f"{path}: unreadable manifest ({type(exc).__name__}: {exc}); {REDO_SHARDS}"
        ) from None
    for f in manifest.files:
        shard_path(shards_dir, f)
    return manifest


def shard_path(shards_dir: str | Path, shard: ShardFile) -> Path:
    """Where a listed shard lies; a path that is absolute or climbs out of `shards_dir` is refused."""
    relative = Path(shard.path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ManifestError(
            f"{Path(shards_dir) / MANIFEST_NAME}: shard path {shard.path!r} is outside the shards "
            f"directory; refused ({REDO_SHARDS})"
        )
    return Path(shards_dir) / relative


def verify_shard(shards_dir: str | Path, shard: ShardFile) -> Path:
    """The shard's path, once its size and sha256 match the manifest (else `ManifestError`)."""
    path = shard_path(shards_dir, shard)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read shard ({exc.strerror}); {REDO_SHARDS}") from None
    if size != shard.bytes:
        raise ManifestError(
            f"{path}: {size} bytes but the manifest says {shard.bytes} (truncated or replaced); {REDO_SHARDS}"
        )
    if file_sha256(path) != shard.sha256:
        raise ManifestError(f"{path}: sha256 differs from the manifest (the file changed); {REDO_SHARDS}")
    return path
