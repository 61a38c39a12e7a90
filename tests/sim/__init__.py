"""Simulators of database servers that cannot run here (tests only)."""
