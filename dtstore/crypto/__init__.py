"""Leaf package: key derivation, key slots, AEAD sealing and keyed chunk IDs.  Imports no layer."""
