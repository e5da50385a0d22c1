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

Windows device names (decision): ``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``-``COM9`` and
``LPT0``-``LPT9`` are refused in any letter case and with any extension (``nul``, ``Con.txt``,
``com1.tar.gz``): Windows opens the device instead of a file for every one of them, so a run folder
holding them cannot be copied to or read on Windows (or a share it serves). A name ending in ``.``
is refused too: Windows drops a trailing dot, so ``a.`` and ``a`` would be one file there.

Decision: a name that does not match is REFUSED with a one-line error naming what it is, where it
came from and its value (:class:`UnsafeNameError`, a ConfigError: exit code 2 in the CLI). Names
are not silently rewritten into safe file names: a rewritten id would no longer be the key a user
joins the tables on, and two ids could map to the same file.

Paths: :func:`inside` resolves a path (relative paths against a root) and refuses one that leaves
the root (``..``, an absolute path elsewhere, a symlink pointing out), one with a component longer
than :data:`COMPONENT_MAX_BYTES` (255 bytes of UTF-8, the file-name limit of ext4, XFS, btrfs, APFS
and NTFS) or a whole path longer than :data:`PATH_MAX_BYTES` (4095, Linux's PATH_MAX less the NUL),
and one whose components below the root include a Windows device name: every writer of a run
folder checks its target with it (:class:`UnsafePathError`), so a too-long name is refused before
anything is written instead of failing halfway with "File name too long".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from avits_core.errors import ConfigError, StoreError

__all__ = [
    "COMPONENT_MAX_BYTES",
    "NAME_MAX",
    "PATH_MAX_BYTES",
    "PROMPT_ID_MAX",
    "WINDOWS_DEVICE_NAMES",
    "SAFE_NAME_RE",
    "UnsafeNameError",
    "UnsafePathError",
    "check_components",
    "check_name",
    "check_path_lengths",
    "check_prompt_id",
    "inside",
    "is_safe_name",
    "windows_device",
]

#: Longest run id, selection id, benchmark or report name.
NAME_MAX = 200
#: Longest prompt id (a candidate file name appends ``_g00_c000.mp4``: 13 more characters).
PROMPT_ID_MAX = 128
_CHARS = "A-Za-z0-9._=+-"
#: The one pattern every path-forming name matches (length is checked separately).
SAFE_NAME_RE = re.compile(rf"^[{_CHARS}]+$")
#: Longest file or folder name, in bytes of UTF-8 (ext4, XFS, btrfs: 255 bytes; NTFS, APFS: 255 characters).
COMPONENT_MAX_BYTES = 255
#: Longest whole path, in bytes of UTF-8 (Linux PATH_MAX is 4096 with the final NUL).
PATH_MAX_BYTES = 4095
#: Names Windows maps to devices, whatever the case and the extension (see the module docstring).
WINDOWS_DEVICE_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                                  *(f"LPT{i}" for i in range(10))})


def windows_device(component: str) -> str | None:
    """The Windows device ``component`` names (``"NUL"`` for ``nul.txt``), or None. The part before
    the first dot counts, with trailing spaces dropped, as Windows reads it."""
    stem = component.split(".", 1)[0].rstrip(" ").upper()
    return stem if stem in WINDOWS_DEVICE_NAMES else None


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
    dev = windows_device(value)
    if dev is not None:
        return f"is the Windows device name {dev} (CON, PRN, AUX, NUL, COM0-9, LPT0-9 are refused in any case, with any extension)"
    if value.endswith("."):
        return "ends with '.' (Windows drops it: two names would be one file)"
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
    check_path_lengths(full, shown=str(p))
    check_components(full.relative_to(root_r), shown=str(p))
    return full


def check_components(rel: str | os.PathLike[str], shown: str | None = None) -> None:
    """UnsafePathError when a component of the relative path ``rel`` (what a writer adds below its
    root; also the object-store key below a run folder) is a Windows device name or longer than
    COMPONENT_MAX_BYTES."""
    text = os.fspath(rel)
    check_path_lengths(text, shown=shown)
    for part in Path(text).parts:
        dev = windows_device(part)
        if dev is not None:
            raise UnsafePathError(f"path {shown if shown is not None else text!r} has the component {part!r}, "
                                  f"the Windows device name {dev}")


def check_path_lengths(path: str | os.PathLike[str], shown: str | None = None) -> None:
    """UnsafePathError when a component of ``path`` is over COMPONENT_MAX_BYTES or the whole path
    over PATH_MAX_BYTES (bytes of UTF-8; ``shown``: the path as the caller gave it, for the message)."""
    text = os.fspath(path)
    what = repr(shown if shown is not None else text)
    if len(what) > 120:
        what = what[:117] + "..."
    for part in Path(text).parts:
        n = len(part.encode("utf-8", "surrogateescape"))
        if n > COMPONENT_MAX_BYTES:
            raise UnsafePathError(f"path {what} has a component of {n} bytes (at most {COMPONENT_MAX_BYTES}): "
                                  f"{part[:40]!r}...")
    n = len(text.encode("utf-8", "surrogateescape"))
    if n > PATH_MAX_BYTES:
        raise UnsafePathError(f"path {what} is {n} bytes long (at most {PATH_MAX_BYTES})")
