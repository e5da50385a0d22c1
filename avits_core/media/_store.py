"""Reading a media file that lives in an object store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from avits_core.errors import MediaFileNotFoundError
from avits_core.store import fs as sfs

T = TypeVar("T")


def read_remote(path: Any, read: Callable[[Any], T], what: str = "media") -> T:
    """``read`` applied to a downloaded temp copy of the object-store ``path`` (one GET, no HEAD first).

    A missing object (FileNotFoundError) becomes MediaFileNotFoundError("<what> file not found: <path>").
    """
    try:
        with sfs.local_copy(path) as local:
            return read(local)
    except FileNotFoundError:
        raise MediaFileNotFoundError(f"{what} file not found: {path}") from None
