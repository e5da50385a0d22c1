"""The pre-flight checks, one module per kind; :mod:`avits_core.preflight` runs them in order.

- :mod:`~avits_core.checks.base`: finding lines (``ok:``, ``WARNING:``, ``MISSING:``, ``ERROR:``) and
  the state shared by one pass over the checks;
- :mod:`~avits_core.checks.inputs`: names, aggregator, output root, run folder, prompts;
- :mod:`~avits_core.checks.models`: generator, verifiers, distribution metrics, devices.
"""
