"""Prompt sets: CSV/TSV (JavisBench columns), JSONL, plain text (one prompt a line), or inline lists.

A Prompt has a stable ``prompt_id`` (the key in every table), the ``text`` fed to the generator and
to text-conditioned verifiers, and ``meta``: every other column of the source. For JavisBench CSVs
(``text, audio_text, video_text, cat0_ind, cat0_title, ...``) ``text`` is the prompt and the rest is
kept as metadata (``audio_text`` for audio-side verifiers, ``cat*_ind`` for per-category results).

Prompt ids: a ``prompt_id`` column/key if present, else JavisBench's ``id``, else ``p0000``,
``p0001``... in prompt order. A ``.txt`` file has one prompt per line; blank lines and lines starting
with ``#`` are skipped. A ``.jsonl`` file has one JSON object per line (``text`` - or the configured
text column - required; ``prompt_id``/``id`` optional; other keys are metadata).

How files as people really have them are read (decisions; also in docs/inputs.md). Every error is
a one-line :class:`PromptError` naming the file, the 1-based line, the field and the value.

* Encoding: UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" starts with one; it is
  stripped, so the first column keeps its real name and ids). A UTF-16 file with a BOM (Excel's
  "Unicode text") is decoded as UTF-16. Any other non-UTF-8 byte is an error naming the line and
  the byte (we never guess a legacy code page: a wrong guess silently changes the prompts).
* Line ends: LF, CRLF and CR are all accepted (a quoted CSV field may span lines; the line named
  in an error is the line where the record starts).
* Field counts (CSV/TSV): every record must have exactly as many fields as the header. A row with
  more fields (typically an unquoted comma in a caption) or fewer is an error naming the line and
  both counts: shifting the rest of the row into other columns would silently change prompts.
  Header names are stripped of spaces; an empty or repeated header name is an error.
* Empty rows: a blank line, or a CSV row whose fields are all empty (spreadsheets export trailing
  ",,,," rows) is skipped. A row with an id or metadata but no text is an error.
* Text: leading/trailing whitespace is stripped; inner line breaks are kept. A caption longer than
  :data:`MAX_TEXT_CHARS` (10,000) characters is an error: no prompt set has such captions, but a
  quote left open swallows the rest of a file into one field. Long captions below that are kept
  whole; each model truncates to what its text tower reads (CLIP 77 tokens, ...), as documented by
  the verifiers. A NUL character anywhere is an error.
* Ids: checked with :func:`avits_core.names.check_prompt_id` (letters, digits, ``. _ = + -``, at
  most 128 characters, not starting with ``.``): an id is a folder name under ``media/``, so
  ``../x``, ``/abs``, NUL or 300-character ids are refused, never rewritten. Duplicate ids are an
  error naming both lines; so are two ids that differ only in case (they would share one media
  folder on a case-insensitive filesystem).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from avits_core.errors import PromptError
from avits_core.names import UnsafeNameError, check_prompt_id

log = logging.getLogger(__name__)

#: Longest caption accepted (characters).
MAX_TEXT_CHARS = 10_000
#: Prompt file suffixes load_prompts reads.
PROMPT_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl")


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def categories(self) -> dict[str, str]:
        """JavisBench category indices, e.g. {"cat0": "2", "cat2": "0,1"} (empty for other sources)."""
        return {k[: -len("_ind")]: str(v) for k, v in self.meta.items() if k.startswith("cat") and k.endswith("_ind")}


def _short(value: str, n: int = 60) -> str:
    return repr(value if len(value) <= n else value[: n - 3] + "...")


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The text of a file, decoded as UTF-8 (a BOM is dropped) or BOM-marked UTF-16.

    Raises PromptError naming the file, the 1-based line and the offending byte for anything
    else (no code-page guessing), and for a missing file or a folder."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PromptError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise PromptError(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise PromptError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise PromptError(f"{path}: starts with a UTF-16 byte-order mark but is not valid UTF-16 ({exc.reason})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bom = 3 if raw.startswith(codecs.BOM_UTF8) else 0
        start = exc.start + bom
        line = raw.count(b"\n", 0, start) + 1
        col = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        byte = raw[start:start + 1]
        raise PromptError(f"{path}: line {line}, column {col}: byte 0x{byte.hex()} is not UTF-8 "
                          "(save the file as UTF-8)") from None


def _check_text(text: str, where: str) -> str:
    if "\x00" in text:
        raise PromptError(f"{where}: the text contains a NUL character")
    if len(text) > MAX_TEXT_CHARS:
        raise PromptError(f"{where}: the text is {len(text)} characters long (at most {MAX_TEXT_CHARS}; "
                          f"an unclosed quote?): {_short(text)}")
    return text


def _id(value: str, where: str) -> str:
    try:
        return check_prompt_id(value, where=where)
    except UnsafeNameError as exc:
        raise PromptError(str(exc)) from None


def _finish(items: Sequence[tuple[str | None, str, dict[str, Any], str]], source: str) -> list[Prompt]:
    """(id or None, text, meta, where) -> prompts with checked, unique ids (generated where None)."""
    if not items:
        raise PromptError(f"{source}: no prompts found (the prompt set is empty)")
    out: list[Prompt] = []
    seen: dict[str, str] = {}
    folded: dict[str, tuple[str, str]] = {}
    for k, (pid, text, meta, where) in enumerate(items):
        if pid is None:
            pid = f"p{k:04d}"
        if not text:
            raise PromptError(f"{where}: prompt {pid!r} has empty text")
        if pid in seen:
            raise PromptError(f"{where}: duplicate prompt_id {pid!r} (first at {seen[pid]})")
        low = pid.casefold()
        if low in folded:
            other, at = folded[low]
            raise PromptError(f"{where}: prompt id {pid!r} differs from {other!r} ({at}) only in case "
                              "(they would share one media folder on a case-insensitive filesystem)")
        short = where.removeprefix(f"{source}: ")
        seen[pid] = short
        folded[low] = (pid, short)
        out.append(Prompt(prompt_id=pid, text=text, meta=meta))
    return out


def _check_unique(prompts: Sequence[Prompt], source: str) -> list[Prompt]:
    """Check ids (safe, unique) and texts of already built prompts."""
    return _finish([(_id(p.prompt_id, f"{source}: prompt {i + 1}"), _check_text(p.text.strip(), f"{source}: prompt {i + 1}"),
                     p.meta, f"{source}: prompt {i + 1}") for i, p in enumerate(prompts)], source)


def load_csv(path: Path, text_column: str = "text", *, delimiter: str | None = None) -> list[Prompt]:
    """A CSV (or, with ``delimiter="\\t"`` or a .tsv suffix, TSV) prompt file; see the module docstring."""
    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    text = read_text_file(path, "prompt file")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    items: list[tuple[str | None, str, dict[str, Any], str]] = []
    id_col: str | None = None
    text_idx = -1
    id_idx = -1
    last_line = 0
    try:
        for fields in reader:
            line = last_line + 1  # the record's first physical line
            last_line = reader.line_num
            where = f"{path}: line {line}"
            if header is None:
                if not fields or all(not f.strip() for f in fields):
                    continue  # blank lines before the header
                header = [f.strip() for f in fields]
                for j, name in enumerate(header):
                    if not name:
                        raise PromptError(f"{where}: header field {j + 1} is empty")
                    if header.index(name) != j:
                        raise PromptError(f"{where}: header names column {name!r} twice")
                if text_column not in header:
                    raise PromptError(f"{path}: no {text_column!r} column; columns are {header}")
                id_col = "prompt_id" if "prompt_id" in header else ("id" if "id" in header else None)
                text_idx = header.index(text_column)
                id_idx = header.index(id_col) if id_col else -1
                continue
            if not fields or all(not f.strip() for f in fields):
                continue  # an empty row
            if len(fields) != len(header):
                more = "more" if len(fields) > len(header) else "fewer"
                hint = " (an unquoted comma in a caption? quote the field)" if more == "more" and delimiter == "," else ""
                raise PromptError(f"{where}: {len(fields)} fields, {more} than the header's {len(header)}{hint}")
            txt = _check_text(fields[text_idx].strip(), f"{where}, field {text_column!r}")
            pid = _id(fields[id_idx].strip(), f"{where}, field {id_col!r}") if id_col else None
            meta = {h: v for h, v in zip(header, fields) if h not in (text_column, id_col)}
            for h, v in meta.items():
                if "\x00" in v:
                    raise PromptError(f"{where}, field {h!r}: contains a NUL character")
            items.append((pid, txt, meta, where))
    except csv.Error as exc:
        raise PromptError(f"{path}: line {last_line + 1}: malformed CSV: {exc}") from None
    if header is None:
        raise PromptError(f"{path}: empty prompt file (no header)")
    return _finish(items, str(path))


def load_txt(path: Path) -> list[Prompt]:
    """One prompt per line; blank lines and ``#`` comments skipped; ids p0000... in prompt order."""
    path = Path(path)
    text = read_text_file(path, "prompt file")
    items = []
    for i, ln in enumerate(text.splitlines()):
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{path}: line {i + 1}"
        items.append((None, _check_text(s, where), {}, where))
    return _finish(items, str(path))


def load_jsonl(path: Path, text_column: str = "text") -> list[Prompt]:
    """One JSON object per line: ``text_column`` (a string) required, ``prompt_id``/``id`` optional,
    other keys kept as metadata. Blank lines are skipped."""
    path = Path(path)
    text = read_text_file(path, "prompt file")
    items = []
    for i, ln in enumerate(text.splitlines()):
        if not ln.strip():
            continue
        where = f"{path}: line {i + 1}"
        try:
            obj = json.loads(ln)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise PromptError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if text_column not in obj:
            raise PromptError(f"{where}: no {text_column!r} key; keys are {sorted(obj)}")
        txt = obj[text_column]
        if not isinstance(txt, str):
            raise PromptError(f"{where}, field {text_column!r}: expected a string, got {txt!r}")
        id_key = "prompt_id" if "prompt_id" in obj else ("id" if "id" in obj else None)
        pid = None
        if id_key is not None:
            raw = obj[id_key]
            if isinstance(raw, bool) or not isinstance(raw, (str, int)):
                raise PromptError(f"{where}, field {id_key!r}: expected a string, got {raw!r}")
            pid = _id(str(raw).strip(), f"{where}, field {id_key!r}")
        meta = {k: v for k, v in obj.items() if k not in (text_column, id_key)}
        items.append((pid, _check_text(txt.strip(), f"{where}, field {text_column!r}"), meta, where))
    return _finish(items, str(path))


def load_prompts(source: str | Path | Iterable[str], *, text_column: str = "text", limit: int | None = None) -> list[Prompt]:
    """Load a prompt set from a .csv/.tsv/.jsonl/.txt path, or a list of strings (inline prompts)."""
    if isinstance(source, (str, Path)) and (isinstance(source, Path) or Path(source).suffix.lower() in PROMPT_SUFFIXES):
        path = Path(source)
        if not path.exists():
            raise PromptError(f"prompt file not found: {path}")
        if path.is_dir():
            raise PromptError(f"prompt source is a folder, not a file: {path}")
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            prompts = load_csv(path, text_column)
        elif suffix == ".txt":
            prompts = load_txt(path)
        elif suffix == ".jsonl":
            prompts = load_jsonl(path, text_column)
        else:
            raise PromptError(f"{path}: unsupported prompt file type {path.suffix!r} (use {', '.join(PROMPT_SUFFIXES)})")
    elif isinstance(source, str):
        raise PromptError(f"prompt source {source!r} is neither a {'/'.join(PROMPT_SUFFIXES)} path nor a list of prompts")
    else:
        items = list(source)
        if not all(isinstance(t, str) for t in items):
            bad = next(t for t in items if not isinstance(t, str))
            raise PromptError(f"inline prompts must be strings, got {bad!r}")
        prompts = _finish([(None, _check_text(t.strip(), f"inline prompt {i + 1}"), {}, f"inline prompt {i + 1}")
                           for i, t in enumerate(items)], "inline prompts")
    if limit is not None:
        if limit < 1:
            raise PromptError(f"prompt limit must be >= 1, got {limit}")
        prompts = prompts[:limit]
    return prompts
