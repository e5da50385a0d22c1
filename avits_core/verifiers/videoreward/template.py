"""VideoReward's prompt template and chat text.

Template. VideoReward was trained with one fixed instruction (VideoAlign's ``detailed_special``
template, the constant ``DETAILED_PROMPT_WITH_SPECIAL_TOKEN`` of its ``prompt_template.py``): a text
of 3,997 characters that asks for the three ratings and closes each section with its reward token
(``<|VQ_reward|>``, ``<|MQ_reward|>``, ``<|TA_reward|>``, in that order) and has one ``{text_prompt}``
slot. avits does not ship that text; the user points ``template_path`` at

- VideoAlign's ``prompt_template.py`` itself (the constant is read with ``ast``: the file is parsed,
  never executed), or
- a text file holding exactly the template (UTF-8, no newline translation).

Either way the text must hash to :data:`TEMPLATE_SHA256` (or the ``expected_sha256`` a caller
passes, e.g. a test with its own template); a mismatch is a :class:`TemplateError` naming the file,
both hashes and the length. Byte-exactness matters: the template starts with a newline and five
lines end in spaces. It must also hold the ``{text_prompt}`` slot once and each reward token once, in
VQ, MQ, TA order (the pooled outputs are read in sequence order).

Formatting. ``template.replace("{text_prompt}", text)``: the template has no other braces, so this
equals the reference's ``str.format`` and lets prompts hold braces.

Chat text. One user turn ``[video, text]`` through Qwen2-VL's chat template with the default system
turn and ``add_generation_prompt=True`` renders as::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|video_pad|><|vision_end|>{text}<|im_end|>\\n<|im_start|>assistant\\n

(one string; the line break after ``user\\n`` above is only for display). :func:`chat_text`
writes it by hand; the loader checks it against the tokenizer's own chat template when the base
model folder ships one.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

from avits_core.errors import ConfigError

TEMPLATE_SHA256 = "fdb6309bac618dd0c8b1b589d3a0970a974f7856eecbb355a190b2dce54af700"
TEMPLATE_CHARS = 3997
TEMPLATE_CONSTANT = "DETAILED_PROMPT_WITH_SPECIAL_TOKEN"
TEMPLATE_URL = "https://raw.githubusercontent.com/KwaiVGI/VideoAlign/main/prompt_template.py"
SLOT = "{text_prompt}"
REWARD_TOKENS = ("<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>")
HEADS = ("VQ", "MQ", "TA")
VIDEO_PAD = "<|video_pad|>"
SYSTEM_PROMPT = "You are a helpful assistant."
# Tokens a prompt must not contain: they would be read as control tokens, not text.
CONTROL_TOKENS = REWARD_TOKENS + ("<|video_pad|>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>",
                                  "<|vision_pad|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>")


class TemplateError(ConfigError):
    """The prompt template file is missing, is not VideoAlign's template, or is malformed."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_python_constant(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise TemplateError(f"videoreward template_path {str(path)!r}: cannot parse it as Python ({exc})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == TEMPLATE_CONSTANT
                                                for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
            raise TemplateError(f"videoreward template_path {str(path)!r}: {TEMPLATE_CONSTANT} is not a string literal")
    raise TemplateError(f"videoreward template_path {str(path)!r}: no {TEMPLATE_CONSTANT} = \"\"\"...\"\"\" "
                        f"assignment found (is it VideoAlign's prompt_template.py?)")


def read_template(path: str | os.PathLike[str]) -> str:
    """The template text of ``path`` (VideoAlign's prompt_template.py or a plain text file), unchecked."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_file():
        raise TemplateError(f"videoreward template_path {str(p)!r} does not exist; {template_hint(p)}")
    if p.suffix == ".py":
        return _read_python_constant(p)
    with open(p, encoding="utf-8", newline="") as fh:
        return fh.read()


def template_hint(target: str | os.PathLike[str] = "models/VideoAlign/prompt_template.py") -> str:
    return (f"get VideoAlign's template with `wget {TEMPLATE_URL} -O {os.fspath(target)}` (or clone "
            f"github.com/KwaiVGI/VideoAlign) and pass template_path=<that file>")


def check_template(text: str, *, where: str = "template", expected_sha256: str = TEMPLATE_SHA256) -> str:
    """Return ``text`` if it hashes to ``expected_sha256`` and has the slot and the reward tokens in order."""
    got = sha256_text(text)
    if got != expected_sha256:
        raise TemplateError(
            f"videoreward {where}: sha256 {got} ({len(text)} characters) is not VideoAlign's detailed_special "
            f"template (sha256 {expected_sha256}"
            + (f", {TEMPLATE_CHARS} characters" if expected_sha256 == TEMPLATE_SHA256 else "")
            + "); the file must hold the template byte for byte (leading newline and trailing spaces "
              "included); " + template_hint()
        )
    if text.count(SLOT) != 1:
        raise TemplateError(f"videoreward {where}: needs exactly one {SLOT} slot, found {text.count(SLOT)}")
    pos = []
    for tok in REWARD_TOKENS:
        if text.count(tok) != 1:
            raise TemplateError(f"videoreward {where}: needs {tok} exactly once, found {text.count(tok)}")
        pos.append(text.index(tok))
    if pos != sorted(pos):
        raise TemplateError(f"videoreward {where}: the reward tokens must appear in the order {REWARD_TOKENS}")
    return text


def load_template(path: str | os.PathLike[str], expected_sha256: str = TEMPLATE_SHA256) -> str:
    """Read and check the template at ``path`` (see the module docstring)."""
    return check_template(read_template(path), where=f"template_path {os.fspath(path)!r}",
                          expected_sha256=expected_sha256)


def format_prompt(template: str, text: str) -> str:
    """The user text for prompt ``text``; a prompt holding a control token is an error."""
    bad = [t for t in CONTROL_TOKENS if t in text]
    if bad:
        raise ValueError(f"videoreward: the prompt contains the control token(s) {bad}, which would be read as "
                         f"tokens, not text: {text[:80]!r}")
    return template.replace(SLOT, text)


def chat_text(user_text: str) -> str:
    """Qwen2-VL's chat rendering of one user turn [video, text], default system turn, generation prompt."""
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|>{VIDEO_PAD}<|vision_end|>{user_text}<|im_end|>\n<|im_start|>assistant\n")


def chat_messages(user_text: str) -> list[dict]:
    """The same turn as a messages list, for ``tokenizer.apply_chat_template``."""
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user_text}]}]
