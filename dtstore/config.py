"""The repository config object: format version, mandatory features, chunker, compression, packs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import msgpack

from dtstore import clock
from dtstore import format as fmt
from dtstore.chunking import ChunkerParams
from dtstore.compression import DEFAULT as DEFAULT_COMPRESSION
from dtstore.compression import PARAMETER_NAMES, Zstd
from dtstore.crypto.aead import Sealer
from dtstore.crypto.keys import ChunkKeys
from dtstore.errors import UnsupportedFormat, UsageError


@dataclass(frozen=True)
class RepoConfig:
    repository_id: str
    chunker: ChunkerParams
    meta_chunker: ChunkerParams
    compression: Zstd = DEFAULT_COMPRESSION
    pack_size: int = fmt.DEFAULT_PACK_SIZE
    features: tuple[str, ...] = ()
    created: str = field(default_factory=lambda: clock.now().isoformat())
    chunk_keys: ChunkKeys | None = None
    """set (feature ``chunk-keys``) when the chunk-ID key and chunker seed are another repository's"""
    data_public_key: bytes | None = None
    """set (feature ``key-roles``): the X25519 public key new packs and manifests are sealed to"""
    retention: tuple[str, int] | None = None
    """S3 Object Lock (mode, seconds) every writer puts on packs, segments and manifests (spec §17.1)"""

    @property
    def zstd_level(self) -> int:
        return self.compression.level

    @property
    def key_roles(self) -> bool:
        return fmt.FEATURE_KEY_ROLES in self.features

    def with_key_roles(self, chunk_keys: ChunkKeys, public_key: bytes) -> RepoConfig:
        """This config converted to key roles: the chunk keys move into the config (a backup key
        cannot derive them), the data public key is added."""
        features = tuple(dict.fromkeys((*self.features, fmt.FEATURE_CHUNK_KEYS, fmt.FEATURE_KEY_ROLES)))
        return RepoConfig(repository_id=self.repository_id, chunker=self.chunker, meta_chunker=self.meta_chunker,
                          compression=self.compression, pack_size=self.pack_size, features=features,
                          created=self.created, chunk_keys=self.chunk_keys or chunk_keys,
                          data_public_key=public_key, retention=self.retention)

    @classmethod
    def new(cls, *, chunker: ChunkerParams | None = None, zstd_level: int | None = None,
            pack_size: int = fmt.DEFAULT_PACK_SIZE, meta_chunker: ChunkerParams | None = None,
            chunk_keys: ChunkKeys | None = None) -> RepoConfig:
        """``zstd_level``: that zstd level as zstd defines it; None: the tuned default (format.py)."""
        for params in (chunker, meta_chunker):
            if params is not None:
                validate_chunker(params)
        compression = DEFAULT_COMPRESSION if zstd_level is None else Zstd.of(zstd_level)
        if not 64 * 1024 <= pack_size <= 1 << 30:
            raise UsageError("the pack size must be between 64 KiB and 1 GiB")
        return cls(
            repository_id=os.urandom(16).hex(),
            chunker=chunker or ChunkerParams(fmt.DEFAULT_CHUNK_MIN, fmt.DEFAULT_CHUNK_AVG, fmt.DEFAULT_CHUNK_MAX),
            meta_chunker=meta_chunker or ChunkerParams(fmt.META_CHUNK_MIN, fmt.META_CHUNK_AVG, fmt.META_CHUNK_MAX),
            compression=compression, pack_size=pack_size, chunk_keys=chunk_keys,
            features=(fmt.FEATURE_CHUNK_KEYS,) if chunk_keys is not None else (),
        )

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": fmt.FORMAT_VERSION,
            "repository_id": self.repository_id,
            "features": list(self.features),
            "chunker": self.chunker.to_dict(),
            "meta_chunker": self.meta_chunker.to_dict(),
            "compression": _compression_doc(self.compression),
            "pack_size": self.pack_size,
            "created": self.created,
        }
        if self.chunk_keys is not None:
            doc["chunk_keys"] = {"id_key": self.chunk_keys.id_key, "chunker_seed": self.chunk_keys.chunker_seed}
        if self.data_public_key is not None:
            doc["data_public_key"] = self.data_public_key
        if self.retention is not None:
            doc["retention"] = {"mode": self.retention[0], "seconds": self.retention[1]}
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RepoConfig:
        version = doc.get("version")
        if version != fmt.FORMAT_VERSION:
            raise UnsupportedFormat(f"repository format {version} is not supported (this dtstore reads "
                                    f"{fmt.FORMAT_VERSION}); upgrade dtstore")
        unknown = set(doc.get("features", [])) - fmt.KNOWN_FEATURES
        if unknown:
            raise UnsupportedFormat(f"repository needs features this dtstore lacks: {', '.join(sorted(unknown))}")

        def params(d: dict[str, Any]) -> ChunkerParams:
            if d.get("algorithm") != "fastcdc2020":
                raise UnsupportedFormat(f"unknown chunker {d.get('algorithm')!r}")
            return ChunkerParams(int(d["min"]), int(d["avg"]), int(d["max"]))

        features = tuple(doc.get("features", []))
        chunk_keys = None
        if fmt.FEATURE_CHUNK_KEYS in features:
            keys = doc.get("chunk_keys")
            if not isinstance(keys, dict) or not isinstance(keys.get("id_key"), bytes) \
                    or not isinstance(keys.get("chunker_seed"), int):
                raise UnsupportedFormat("the config names the chunk-keys feature but holds no valid chunk_keys")
            chunk_keys = ChunkKeys(keys["id_key"], keys["chunker_seed"])
        public = doc.get("data_public_key")
        if fmt.FEATURE_KEY_ROLES in features:
            if chunk_keys is None or not isinstance(public, bytes) or len(public) != 32:
                raise UnsupportedFormat("the config names the key-roles feature but lacks chunk_keys or a "
                                        "32-byte data_public_key")
        else:
            public = None
        kept = doc.get("retention")
        retention = (str(kept["mode"]), int(kept["seconds"])) if isinstance(kept, dict) else None
        return cls(
            repository_id=doc["repository_id"], chunker=params(doc["chunker"]),
            meta_chunker=params(doc["meta_chunker"]), compression=_compression_of(doc["compression"]),
            pack_size=int(doc["pack_size"]), features=features,
            created=doc.get("created", ""), chunk_keys=chunk_keys, data_public_key=public,
            retention=retention,
        )


def _compression_doc(setting: Zstd) -> dict[str, Any]:
    doc: dict[str, Any] = {"algorithm": "zstd", "level": setting.level}
    if setting.parameters:
        doc["parameters"] = dict(setting.parameters)
    return doc


def _compression_of(doc: dict[str, Any]) -> Zstd:
    """The config's compression map.  ``parameters`` only guide writers, so a parameter this
    dtstore does not know is left out rather than refused (it writes without it)."""
    if doc.get("algorithm") != "zstd":
        raise UnsupportedFormat(f"unknown compression {doc.get('algorithm')!r}")
    given = doc.get("parameters") or {}
    if not isinstance(given, dict) or not all(isinstance(v, int) for v in given.values()):
        raise UnsupportedFormat(f"the config's zstd parameters are not a map of integers: {given!r}")
    known = {str(name): value for name, value in given.items() if name in PARAMETER_NAMES}
    try:
        return Zstd.of(int(doc["level"]), known)
    except UsageError as exc:
        raise UnsupportedFormat(f"the config's compression cannot be used here: {exc}") from None


def validate_chunker(params: ChunkerParams) -> None:
    """The limits of pyfastcdc's FastCDC2020 (see spec §chunking)."""
    mask = params.avg_size - params.min_size
    ok = (64 <= params.min_size <= 1 << 20 and 256 <= mask <= 4 << 20 and 2 * params.min_size <= params.avg_size
          and 1024 <= params.max_size <= 16 << 20 and params.avg_size <= params.max_size)
    if not ok:
        raise UsageError(f"chunker sizes {params.min_size}/{params.avg_size}/{params.max_size} are out of range: "
                         "need 64 B ≤ min ≤ avg/2, avg ≤ max ≤ 16 MiB, min ≤ 1 MiB, 256 B ≤ avg−min ≤ 4 MiB")


def seal_config(config: RepoConfig, sealer: Sealer) -> bytes:
    return sealer.seal(msgpack.packb(config.to_doc()), fmt.AAD_CONFIG)


def open_config(data: bytes, sealer: Sealer) -> RepoConfig:
    return RepoConfig.from_doc(msgpack.unpackb(sealer.open(data, fmt.AAD_CONFIG, "the repository config")))
