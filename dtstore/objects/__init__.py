"""Layer 3: streams as chunk lists."""
