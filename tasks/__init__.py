"""Prefect tasks: thin wrappers around avits_core.runner. Each takes and returns plain values
(run folder paths, ids, dicts) so that task inputs stay small and serialisable; the tables on disk
are the real cache, so Prefect's own result caching is off (NO_CACHE)."""
