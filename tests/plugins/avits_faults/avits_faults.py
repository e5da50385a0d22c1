"""Fault injection for tests/test_faults.py: a flaky verifier plugin and a SIGKILL hook.

This folder is put on ``PYTHONPATH`` by the test (never installed): its ``avits_faults-0.1.dist-info``
declares the verifier ``fault_flaky`` in the ``avits.verifiers`` entry-point group, so an ``avits``
subprocess finds it like any plugin. Importing this module (which the registry does when a config
names ``fault_flaky``) also installs the kill hook when ``AVITS_FAULT_KILL`` is set:

* ``AVITS_FAULT_KILL=candidates:1`` -- SIGKILL the process group right after the 1st part file of
  table ``candidates`` is written (any table name works: ``arw_trace``, ``selections``, ``metrics``);
* ``AVITS_FAULT_KILL=rewards:av_sync:2`` -- after the 2nd rewards part holding rows of verifier ``av_sync``;
  until then every OTHER verifier's rewards part waits (up to ``HOLD_SECONDS``) before it is written,
  so the kill lands while the other verifiers still have work left, whichever verifier is faster;
* ``AVITS_FAULT_KILL=report`` -- on entry to ``write_report``.

``AVITS_FAULT_FLAKY=1`` makes ``fault_flaky`` raise on every 10th distinct clip it scores in the process
(10 % of clips); without it the verifier never raises, which is how a later ``avits rerank`` retries.
"""

from __future__ import annotations

import os
import signal
import threading
import zlib

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import Verifier

_lock = threading.Lock()
_seen: dict[int, int] = {}


#: How long another verifier's rewards part waits for a verifier kill point (a guard against a
#: deadlock should scoring ever run one verifier after the other: then it proceeds, and the test
#: that expects the kill at a later stage fails loudly instead of hanging).
HOLD_SECONDS = 300.0
_killed = threading.Event()  # never set: a held writer waits until the process is killed


def _die() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


class FaultFlaky(Verifier):
    """Test verifier: mean pixel value of the clip's video divided by 255, in [0, 1].

    Computed on the decoded frames (uint8), whatever the prompt says. With ``AVITS_FAULT_FLAKY=1`` in
    the environment, every 10th distinct clip scored in the process raises ``RuntimeError`` (an error row).
    """

    name = "fault_flaky"
    version = "1"
    higher_is_better = True
    value_range = (0.0, 1.0)

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        video = np.ascontiguousarray(clip.video)
        key = zlib.crc32(video.tobytes())
        with _lock:  # the n-th distinct clip seen (a retry of the same clip keeps its number)
            n = _seen.setdefault(key, len(_seen) + 1)
        if os.environ.get("AVITS_FAULT_FLAKY") == "1" and n % 10 == 0:
            raise RuntimeError(f"injected fault on clip #{n}")
        return float(video.astype(np.float64).mean() / 255.0)


def _install_kill_hook(spec: str) -> None:
    from avits_core.store.parquet import RunStore

    parts = spec.split(":")
    if parts[0] == "report":
        import avits_core.report as rep

        orig_report = rep.write_report

        def write_report(*a, **kw):
            _die()
            return orig_report(*a, **kw)

        rep.write_report = write_report
        return
    table, verifier, k = (parts[0], parts[1], int(parts[2])) if len(parts) == 3 else (parts[0], None, int(parts[1]))
    seen = [0]
    orig_append = RunStore.append

    def verifiers_of(rows):
        return rows.column("verifier").to_pylist() if hasattr(rows, "column") else [r.get("verifier") for r in rows]

    def append(self, tbl, rows, **kw):
        if verifier is not None and tbl == table and verifier not in verifiers_of(rows):
            _killed.wait(HOLD_SECONDS)  # another verifier: hold its part until the kill point is reached
        out = orig_append(self, tbl, rows, **kw)
        if tbl == table:
            names = verifiers_of(rows) if verifier else []
            if verifier is None or verifier in names:
                with _lock:
                    seen[0] += 1
                    if seen[0] >= k:
                        _die()
        return out

    RunStore.append = append


if os.environ.get("AVITS_FAULT_KILL"):
    _install_kill_hook(os.environ["AVITS_FAULT_KILL"])
