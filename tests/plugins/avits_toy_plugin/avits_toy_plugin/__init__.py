"""avits-toy-plugin: a toy joint generator (``toy_av``) and a toy verifier (``toy_loudness``).

Both are registered through entry points (see pyproject.toml), never imported by avits directly.
"""

__version__ = "0.1.0"
