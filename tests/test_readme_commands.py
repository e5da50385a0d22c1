"""Every command of README.md's "Running" section runs as written (issue 10 case 10).

The commands are read from the README itself (every ```bash block between "## Running" and the
next "## " heading), so an edited README is tested as edited. They run in a scratch folder that looks
like the repository to them: ``data/prompts`` and ``.venv`` are links to the real ones, and
``data/configs`` holds copies of the shipped configs cut to a few prompts (``prompts.limit``; the
benchmark's ``set`` likewise) so that the whole section runs in minutes on a CPU. Nothing else is
changed: same commands, same options, same relative paths.

Placeholders: ``runs/<run_id>`` / ``runs/<run>`` become the run folder made by the README's own
commands (the EvoSearch run for ``lineage``, the demo run otherwise). ``make setup`` is skipped (the
test runs inside the set-up environment). All commands share one ``avits server`` (started here,
stopped at the end), which is also how the README suggests running many commands.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.server]

LIMITS = {"demo.yaml": 3, "evosearch-demo.yaml": 2}


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The command lines of the README's "Running" section, comments stripped, in order."""
    text = readme.read_text(encoding="utf-8")
    start = text.index("\n## Running")
    end = text.find("\n## ", start + 5)
    section = text[start: end if end > 0 else len(text)]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                cmds.append(shlex.join(words))
    return cmds


def test_readme_commands_are_found():
    cmds = readme_commands()
    assert any(c.startswith(".venv/bin/avits run data/configs/demo.yaml") for c in cmds), cmds
    assert any(" rerank " in f" {c} " for c in cmds) and any(c.startswith("avits sql runs -c") for c in cmds), cmds


def _scratch(tmp: Path) -> Path:
    (tmp / "data").mkdir()
    (tmp / "data" / "prompts").symlink_to(REPO / "data" / "prompts")
    (tmp / ".venv").symlink_to(Path(sys.executable).parents[1])
    configs = tmp / "data" / "configs"
    configs.mkdir()
    for src in (REPO / "data" / "configs").glob("*.yaml"):
        data = yaml.safe_load(src.read_text())
        if src.name in LIMITS:
            data["prompts"]["limit"] = LIMITS[src.name]
        if "configs" in data:  # a benchmark file: its own prompt limit override
            data["set"] = [s for s in data.get("set", []) if not s.startswith("prompts.limit")] + ["prompts.limit=2"]
        (configs / src.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp


def _fill(cmd: str, cwd: Path) -> str:
    runs = cwd / "runs"

    def newest(prefix: str) -> str:
        found = sorted((p for p in runs.glob(f"{prefix}-*") if (p / "run.json").exists()), key=lambda p: p.stat().st_mtime)
        assert found, f"no run folder {prefix}-* for `{cmd}`"
        return f"runs/{found[-1].name}"

    if "<run_id>" in cmd or "<run>" in cmd:
        which = "evosearch-demo" if cmd.split()[1:2] == ["lineage"] else "demo"
        cmd = cmd.replace("runs/<run_id>", newest(which)).replace("runs/<run>", newest(which))
    return cmd


def test_every_readme_running_command_runs_as_written(tmp_path):
    cwd = _scratch(tmp_path)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PREFECT_HOME": str(tmp_path / "prefect"), "MPLBACKEND": "Agg"}
    env.pop("PREFECT_API_URL", None)
    avits = [str(Path(bindir) / "avits")]
    subprocess.run([*avits, "server", "start", "--port", str(_free_port())], cwd=cwd, env=env, check=True,
                   capture_output=True, timeout=900)
    ran = []
    try:
        for cmd in readme_commands():
            if cmd.startswith("make "):
                continue
            cmd = _fill(cmd, cwd)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
            ran.append((cmd, proc.returncode, time.perf_counter() - t0))
            assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    finally:
        subprocess.run([*avits, "server", "stop"], cwd=cwd, env=env, capture_output=True, timeout=120)
        for cmd, code, dt in ran:
            print(f"{dt:7.1f} s  exit {code}  {cmd}")
    assert len(ran) >= 10


def _free_port() -> int:
    from avits.server import free_port

    return free_port()
