"""Helpers for the Delta Lake tables (delta-rs)."""
