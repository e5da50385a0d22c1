"""Compatibility names for code written against the former EvoSearch runner.

EvoSearch is now a plan-only search method (:mod:`avits_core.search.evosearch`) run by the one
search engine (:mod:`avits_core.search.engine`) over the run's tables (:mod:`avits_core.runner`).
"""

from avits_core.runner import compute_summary, lineage_tree, read_plan, record_compute  # noqa: F401
