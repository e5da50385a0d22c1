"""Prefect flows: its (one config), rerank (no regeneration), benchmark (several configs)."""
