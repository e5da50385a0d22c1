"""avits_core: inference-time scaling for joint text-to-audio+video generation.

The library never imports Prefect: every algorithm here is plain Python, and the
Prefect tasks in ``tasks/`` and flows in ``flows/`` only wire these pieces together.

Pieces (diffusers-style split):
  generators/  JointGenerator protocol + SynthAV (embedded) + LTX-2
  verifiers/   Verifier base class + registry
  search/      Best-of-N, EvoSearch (ask/tell loops over the protocols)
  aggregate/   weighted, rank, minmax, zscore*, arw
  store/       Arrow schemas, atomic Parquet parts, DuckDB views
  metrics/     evaluation metrics (oracle, Fréchet distances, embedding scores)
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
