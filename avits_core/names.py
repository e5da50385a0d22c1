"""Safe names: every user-supplied name that becomes part of a path is checked here, before anything is written.

Names that become file or folder names: prompt ids (``media/<prompt_id>/<candidate_id>.mp4``,
``latents/<prompt_id>/``), run ids (``<output_root>/<run_id>/``), selection ids, benchmark names,
report names, config ``name``. They all follow ONE pattern, :data:`SAFE_NAME_RE`:

    1 to ``max_len`` characters from ``A-Z a-z 0-9 . _ = + -``, not starting with ``.``

so a name is always exactly one path component: no ``/`` or ``\\``, no NUL or other control
character, no space, never ``.`` or ``..`` and never hidden. Leading ``-`` and ``_`` are allowed
because public datasets use them (YouTube ids such as ``-0Gj8-vB1q4`` in VGGSound). Lengths:
prompt ids at most :data:`PROMPT_ID_MAX` (128) characters, because a candidate file name adds
``_g00_c000.mp4`` to it and a file name must stay under 255 bytes on every common filesystem; other
names at most :data:`NAME_MAX` (200).

Decision: a name that does not match is REFUSED with a one-line error naming what it is, where it
came from and its value (:class:`UnsafeNameError`, a ConfigError: exit code 2 in the CLI). Names
are not silently rewritten into safe file names: a rewritten id would no longer be the key a user
joins the tables on, and two ids could map to the same file.

Paths: :func:`inside` resolves a path (relative paths against a root) and refuses one that leaves
the root (``..``, an absolute path elsewhere, a symlink pointing out): every writer of a run
folder checks its target with it (:class:`UnsafePathError`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from avits_core.errors import ConfigError, StoreError

__all__ = [
    "NAME_MAX",
    "PROMPT_ID_MAX",
    "SAFE_NAME_RE",
    "UnsafeNameError",
    "UnsafePathError",
    "check_name",
    "check_prompt_id",
    "inside",
    "is_safe_name",
]

#: Longest run id, selection id, benchmark or report name.
NAME_MAX = 200
#: Longest prompt id (a candidate file name appends ``_g00_c000.mp4``: 13 more characters).
PROMPT_ID_MAX = 128
_CHARS = "A-Za-z0-9._=+-"
#: The one pattern every path-forming name matches (length is checked separately).
SAFE_NAME_RE = re.compile(rf"^[{_CHARS}]+$")


class UnsafeNameError(ConfigError):
    """A name that would become a path does not match the safe pattern; the message names it."""


class UnsafePathError(StoreError):
    """A write would land outside its run folder."""


def _why_unsafe(value: object, max_len: int) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "is empty"
    if len(value) > max_len:
        return f"is {len(value)} characters long (at most {max_len})"
    if value.startswith("."):
        return "starts with '.' (a hidden file, '.' or '..')"
    if "\x00" in value:
        return "contains a NUL character"
    bad = sorted({ch for ch in value if not SAFE_NAME_RE.match(ch)})
    if bad:
        shown = "".join(bad[:5])
        return (f"contains {shown!r} (allowed: letters, digits and . _ = + -; "
                "no '/', spaces or other characters)")
    return None


def is_safe_name(value: object, max_len: int = NAME_MAX) -> bool:
    """True when ``value`` is a safe single path component (see the module docstring)."""
    return _why_unsafe(value, max_len) is None


def check_name(value: object, what: str, *, max_len: int = NAME_MAX, where: str | None = None) -> str:
    """Return ``value`` when it is a safe name, else raise UnsafeNameError naming ``what`` (e.g. "run id"),
    ``where`` it came from (a file and line, an option) and the value."""
    why = _why_unsafe(value, max_len)
    if why is not None:
        shown = repr(value if not isinstance(value, str) or len(value) <= 80 else value[:77] + "...")
        prefix = f"{where}: " if where else ""
        raise UnsafeNameError(f"{prefix}{what} {shown} {why}")
    return value  # type: ignore[return-value]


def check_prompt_id(value: object, where: str | None = None) -> str:
    """A prompt id: a safe name of at most PROMPT_ID_MAX characters."""
    return check_name(value, "prompt id", max_len=PROMPT_ID_MAX, where=where)


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` (relative paths are taken against ``root``) as an absolute path, checked to stay inside ``root``.

    Symlinks are resolved (an existing link pointing out of the folder is refused too); the path
    need not exist. Raises UnsafePathError otherwise."""
    root_r = Path(root).resolve()
    p = Path(path)
    if "\x00" in str(p):
        raise UnsafePathError(f"path {str(p)!r} contains a NUL character")
    full = (p if p.is_absolute() else root_r / p).resolve()
    if full != root_r and root_r not in full.parents:
        raise UnsafePathError(f"path {str(p)!r} leaves the folder {str(root_r)!r} (resolves to {str(full)!r})")
    return full
