"""Maintenance: locks, prune marks, check, prune and index rebuild.  Uses every layer below it."""
