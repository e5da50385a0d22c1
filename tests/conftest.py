"""Test session settings, robust on a busy machine (issue 10 case 5).

- No network: Hugging Face offline, Prefect analytics off.
- Prefect servers get up to 600 s to start (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, unless
  set): with both cores taken by other work, importing the server and migrating its SQLite database
  took over a minute here, beyond Prefect's default.
- ``PREFECT_HOME`` defaults to a folder of this test session (``make test`` sets a repository-local one):
  servers started by the CLI tests do not share a SQLite database with other sessions on the machine
  (concurrent writers to one database give "database is locked" errors under load).
- Flow tests share one temporary server (``prefect_harness``).
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="avits-test-prefect-"))

import pytest

SERVER_STARTUP_TIMEOUT = int(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (own SQLite DB) shared by the flow tests of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=SERVER_STARTUP_TIMEOUT):
        yield
