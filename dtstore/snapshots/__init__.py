"""Layer 4: snapshot manifests, the single commit point."""
