"""Progress events. Library code reports work done; a front end (the CLI's rich progress bars)
may listen. With no listener, reporting costs a function call and nothing is printed.

``report(stage, advance, total)``: ``advance`` units of ``stage`` are done out of ``total``
(the stage's whole size, repeated on every call so a listener can start mid-way).
"""

from __future__ import annotations

import threading
from typing import Callable

Listener = Callable[[str, int, int], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def add_listener(fn: Listener) -> None:
    with _lock:
        _listeners.append(fn)


def remove_listener(fn: Listener) -> None:
    with _lock:
        if fn in _listeners:
            _listeners.remove(fn)


def report(stage: str, advance: int, total: int) -> None:
    with _lock:
        listeners = list(_listeners)
    for fn in listeners:
        fn(stage, advance, total)
