"""Prompt sets: CSV (JavisBench columns), plain text (one prompt a line), or inline lists.

A Prompt has a stable ``prompt_id`` (the key in every table), the ``text`` fed to the generator and
to text-conditioned verifiers, and ``meta``: every other column of the source. For JavisBench CSVs
(``text, audio_text, video_text, cat0_ind, cat0_title, ...``) ``text`` is the prompt and the rest is
kept as metadata (``audio_text`` for audio-side verifiers, ``cat*_ind`` for per-category results).

Prompt ids: a ``prompt_id`` column if present, else JavisBench's ``id`` column, else ``p0000``,
``p0001``... by row. Ids must be unique and non-empty. A ``.txt`` file has one prompt per line;
blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from avits_core.errors import PromptError


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def categories(self) -> dict[str, str]:
        """JavisBench category indices, e.g. {"cat0": "2", "cat2": "0,1"} (empty for other sources)."""
        return {k[: -len("_ind")]: str(v) for k, v in self.meta.items() if k.startswith("cat") and k.endswith("_ind")}


def _check_unique(prompts: Sequence[Prompt], source: str) -> list[Prompt]:
    if not prompts:
        raise PromptError(f"{source}: no prompts found (the prompt set is empty)")
    seen: dict[str, int] = {}
    for i, p in enumerate(prompts):
        if not p.prompt_id:
            raise PromptError(f"{source}: prompt {i} has an empty prompt_id")
        if not p.text.strip():
            raise PromptError(f"{source}: prompt {p.prompt_id!r} (row {i + 1}) has empty text")
        if p.prompt_id in seen:
            raise PromptError(
                f"{source}: duplicate prompt_id {p.prompt_id!r} (rows {seen[p.prompt_id] + 1} and {i + 1})"
            )
        seen[p.prompt_id] = i
    return list(prompts)


def load_csv(path: Path, text_column: str = "text") -> list[Prompt]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise PromptError(f"{path}: empty CSV file (no header)")
            cols = [c.strip() for c in reader.fieldnames]
            if text_column not in cols:
                raise PromptError(f"{path}: no {text_column!r} column; columns are {cols}")
            id_col = "prompt_id" if "prompt_id" in cols else ("id" if "id" in cols else None)
            out = []
            for i, row in enumerate(reader):
                row = {(k or "").strip(): v for k, v in row.items()}
                if None in row.values() and any(v is None for v in row.values()):
                    raise PromptError(f"{path}: row {i + 2} has fewer fields than the header")
                text = (row.get(text_column) or "").strip()
                pid = (row.get(id_col) or "").strip() if id_col else f"p{i:04d}"
                meta = {k: v for k, v in row.items() if k not in (text_column, id_col) and k}
                out.append(Prompt(prompt_id=pid, text=text, meta=meta))
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise PromptError(f"{path}: malformed CSV: {exc}") from exc
    return _check_unique(out, str(path))


def load_txt(path: Path) -> list[Prompt]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text ({exc})") from exc
    texts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    return _check_unique([Prompt(f"p{i:04d}", t) for i, t in enumerate(texts)], str(path))


def load_prompts(source: str | Path | Iterable[str], *, text_column: str = "text", limit: int | None = None) -> list[Prompt]:
    """Load a prompt set from a .csv / .txt path, or a list of strings (inline prompts)."""
    if isinstance(source, (str, Path)) and (isinstance(source, Path) or Path(source).suffix in (".csv", ".txt", ".tsv")):
        path = Path(source)
        if not path.exists():
            raise PromptError(f"prompt file not found: {path}")
        if path.is_dir():
            raise PromptError(f"prompt source is a folder, not a file: {path}")
        if path.suffix == ".csv":
            prompts = load_csv(path, text_column)
        elif path.suffix == ".txt":
            prompts = load_txt(path)
        else:
            raise PromptError(f"{path}: unsupported prompt file type {path.suffix!r} (use .csv or .txt)")
    elif isinstance(source, str):
        raise PromptError(f"prompt source {source!r} is neither a .csv/.txt path nor a list of prompts")
    else:
        items = list(source)
        if not all(isinstance(t, str) for t in items):
            raise PromptError("inline prompts must be strings")
        prompts = _check_unique([Prompt(f"p{i:04d}", t.strip()) for i, t in enumerate(items)], "inline prompts")
    if limit is not None:
        if limit < 1:
            raise PromptError(f"prompt limit must be >= 1, got {limit}")
        prompts = prompts[:limit]
    return prompts
