"""What every pre-flight check shares: the finding-line vocabulary and the state the checks pass along.

A check returns finding lines, one each, starting with ``ok:``, ``WARNING:``, ``MISSING:`` (a file to
fetch) or ``ERROR:`` (a bad value) (:data:`PREFIXES`); :func:`is_failure` tells the last two apart.
:class:`CheckState` carries the config and the options of one pass over the checks, and what earlier
checks found out (the loaded prompts, the constructed verifiers). The checks are
:mod:`avits_core.checks.inputs` and :mod:`avits_core.checks.models`; the order they run in, the
budget limits and the once-per-command bookkeeping are :mod:`avits_core.preflight`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.config import RunConfig
    from avits_core.prompts import Prompt

__all__ = ["PREFIXES", "CheckState", "finding", "is_failure", "lines_ok"]

PREFIXES = ("ok:", "WARNING:", "MISSING:", "ERROR:")


def is_failure(line: str) -> bool:
    return line.startswith(("MISSING:", "ERROR:"))


def finding(line: str) -> str:
    """Give an unprefixed line (e.g. ltx2_doctor's memory estimate) the ``ok:`` prefix."""
    return line if line.startswith(PREFIXES) else f"ok: {line}"


def lines_ok(lines: Iterable[str]) -> bool:
    return not any(is_failure(ln) for ln in lines)


@dataclass
class CheckState:
    """What the checks share: the config, options, and what earlier checks found out."""

    cfg: "RunConfig"
    models: bool = True
    force: bool = False
    prompts: "list[Prompt] | None" = None
    verifiers: dict[str, Any] = field(default_factory=dict)  # (role, name) -> instance
