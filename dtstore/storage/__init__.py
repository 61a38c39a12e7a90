"""Layer 1: named immutable blobs on some remote.  Nothing here knows about chunks or snapshots."""
