"""Layer 2: chunks, packs and the index.  Knows storage, never objects or snapshots."""
