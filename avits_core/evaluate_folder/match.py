"""Which file belongs to which prompt: safe clip file names, ``id`` / ``javisbench`` / ``auto`` naming,
missing and extra files (the rules are in the package docstring)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from avits_core.errors import ConfigError
from avits_core.prompts import Prompt

_SAFE = re.compile(r"^[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*$")
_SAMPLE = re.compile(r"^sample_(\d+)\.mp4$")


def clip_file_name(prompt_id: str, *, where: str = "prompt") -> str:
    """The mp4 file name of a prompt id, ``<id>.mp4``; a ConfigError naming the id (and ``where``)
    when the id cannot be one file name as it is (see :mod:`avits_core.evaluate_folder`)."""
    if not _SAFE.match(prompt_id) or len(prompt_id) > 200:
        bad = "".join(sorted({ch for ch in prompt_id if not re.match(r"[A-Za-z0-9._=+-]", ch)}))
        why = f"contains {bad!r}" if bad else ("starts with '.'" if prompt_id.startswith(".") else "is too long")
        raise ConfigError(f"{where}: prompt id {prompt_id!r} {why}; it cannot name a clip file "
                          f"(allowed: letters, digits and . _ = + -). Give the prompts safe ids "
                          f"(column 'id' or 'prompt_id') and name the files <id>.mp4")
    return f"{prompt_id}.mp4"


@dataclass
class ClipEntry:
    """One prompt and where its clip is (``path`` None when missing; ``problem`` says why)."""

    index: int
    prompt: Prompt
    path: Path | None
    wav: Path | None = None
    problem: str | None = None
    candidate_id: str = ""


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=6)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def locate_clips(folder: Path, prompts: Sequence[Prompt], naming: str = "auto") -> tuple[list[ClipEntry], list[str], str]:
    """(one entry per prompt, names of mp4 files matching no prompt, the naming used)."""
    if naming not in ("auto", "id", "javisbench"):
        raise ConfigError(f"naming must be auto, id or javisbench, got {naming!r}")
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".mp4")
    by_id = {clip_file_name(p.prompt_id, where=f"prompt {i + 1}"): p for i, p in enumerate(prompts)}
    if naming == "auto":
        naming = "javisbench" if files and all(_SAMPLE.match(f) for f in files) and not (set(files) & set(by_id)) else "id"
    entries: list[ClipEntry] = []
    for i, p in enumerate(prompts):
        name = f"sample_{i:04d}.mp4" if naming == "javisbench" else clip_file_name(p.prompt_id)
        path = folder / name
        e = ClipEntry(index=i, prompt=p, path=path if path.is_file() else None)
        if e.path is None:
            e.problem = f"missing: no file {name!r} for prompt {p.prompt_id!r} in {folder}"
            e.candidate_id = f"{p.prompt_id}+missing"
        else:
            wav = path.with_suffix(".wav")
            e.wav = wav if wav.is_file() else None
            e.candidate_id = f"{p.prompt_id}+{_file_digest(path)}"
        entries.append(e)
    used = {e.path.name for e in entries if e.path is not None}
    extra = [f for f in files if f not in used]
    return entries, extra, naming

