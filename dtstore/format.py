"""On-disk constants of repository format v1.  Codes are never reused; retired ones stay listed."""

from __future__ import annotations

FORMAT_VERSION = 1
"""The only repository format this program reads and writes."""

FEATURE_CHUNK_KEYS = "chunk-keys"
"""The config carries the chunk-ID key and chunker seed (taken from another repository by
``init --copy-chunker-from``) instead of deriving them from the master secret."""

FEATURE_KEY_ROLES = "key-roles"
"""Admin and backup keys (spec/repository-format.md §4.4): new packs and manifests are sealed to the
repository's X25519 data public key, the structure (index, trailers, sessions, …) to the shared key."""

KNOWN_FEATURES: frozenset[str] = frozenset({FEATURE_CHUNK_KEYS, FEATURE_KEY_ROLES})
"""Mandatory feature flags this program understands; a config naming any other is refused."""

PACK_MAGIC = b"DTSPACK\x01"
PACK_MAGIC_V2 = b"DTSPACK\x02"
"""a pack sealed to the data public key (feature key-roles): magic ‖ ephemeral X25519 public key (32)"""
SEALED_VERSION = 1
"""First byte of every sealed (encrypted) object other than packs and key slots."""
PUBLIC_SEALED_VERSION = 2
"""First byte of an object sealed to the data public key (manifests of a key-roles repository)."""

# Blob kinds inside packs and the index.
BLOB_DATA = 0
BLOB_META = 1

# Codec byte, the first byte of every blob's plaintext.
CODEC_RAW = 0
CODEC_ZSTD = 1

# Associated-data labels bound into every AEAD operation, one per object kind.
AAD_CONFIG = b"dtstore/v1/config"
AAD_INDEX = b"dtstore/v1/index"
AAD_SNAPSHOT = b"dtstore/v1/snapshot"
AAD_SESSION = b"dtstore/v1/session"
AAD_LOCK = b"dtstore/v1/lock"
AAD_PACK_TRAILER = b"dtstore/v1/pack-trailer"
AAD_KEY_SLOT = b"dtstore/v1/key-slot"
AAD_MAINTENANCE = b"dtstore/v1/maintenance"
AAD_DAMAGED = b"dtstore/v1/damaged"

# HKDF "info" labels for the subkeys derived from the master secret.
INFO_ID_KEY = b"dtstore/v1/chunk-id"
INFO_ENC_KEY = b"dtstore/v1/encryption"
INFO_CHUNKER = b"dtstore/v1/chunker-seed"
INFO_NAME_KEY = b"dtstore/v1/object-names"
INFO_SHARED = b"dtstore/v1/shared"
INFO_SHARED_ENC = b"dtstore/v1/shared/encryption"
INFO_DATA_X25519 = b"dtstore/v1/data-x25519"
INFO_PACK_DATA = b"dtstore/v1/pack-x25519"
INFO_PACK_TRAILER_KEY = b"dtstore/v1/pack-trailer-key"
AAD_OWN_SNAPSHOT = b"dtstore/v1/own-snapshot"

# Defaults written into a new repository's config.
# Chosen by measurement (bench/compare.py data: a 1 GiB mysqldump-like file, then the next night's
# dump with 20 clusters of edited rows and appended rows).  Compressed bytes the second backup adds:
# 256K/1M/8M 20.9 MB, 128K/512K/4M 14.4 MB (16.0 MB in a real repository), 64K/256K/2M 12.2 MB;
# restic 0.14 added 23.0 MB.  Rows of a dump are ~100–300 bytes, so smaller chunks keep an edited
# cluster of rows from dragging large unchanged neighbours along; 256 KiB chunks cost ~4k index
# entries per GiB, which LMDB handles without effort.
# 3 December: the minimum went from 64 KiB to 192 KiB (avg 256 → 384 KiB: the same A = avg − min,
# so the same masks, spec §14.2; measured with bench.chunk_sizes).  FastCDC hashes no byte before
# the minimum, so cutting costs 0.29–0.41 s per GiB of the dump instead of 0.52–0.56; the mean
# chunk went from 303 to 345 KiB on the dump (321–337 KiB on sysbench rows and pages), stored
# bytes stayed within 0.3 % (dump 302.6 → 301.7 MB), and the next night's new chunks grew from
# 12.0 to 12.5 MB compressed (sysbench rows 7.2 → 8.7, pages 13.8 → 16.0).
DEFAULT_CHUNK_MIN = 192 * 1024
DEFAULT_CHUNK_AVG = 384 * 1024
DEFAULT_CHUNK_MAX = 2 * 1024 * 1024
META_CHUNK_MIN = 16 * 1024
META_CHUNK_AVG = 64 * 1024
META_CHUNK_MAX = 256 * 1024
# New repositories: zstd level 1 with a larger match table (issue 18 §2).  Measured by
# bench.compression on 256 MiB of each data set, every chunk alone as the repository compresses it
# (3 December 2026, best of 3; bench/README.md): 1.22x, 1.14x and 1.39x level 2's speed on a dump,
# sysbench-like rows and binary pages, storing 1.004x, 0.931x and 1.015x level 3's bytes.  Plain
# level 1 stores 1.030x on the pages, over the rule's 2 %.  hash_log 16 (level 1: 14) finds the
# matches level 1 misses on pages; min_match 6 is level 1's own for chunks up to 256 KiB (it takes
# 7 above); window_log 18 (256 KiB) compressed faster than 21 at about the same size.
DEFAULT_ZSTD_LEVEL = 1
DEFAULT_ZSTD_PARAMETERS = {"hash_log": 16, "min_match": 6, "window_log": 18}
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
INDEX_SEGMENT_MAX_ENTRIES = 100_000
