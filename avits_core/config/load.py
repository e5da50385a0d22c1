"""Reading a run config: YAML text in (safe loader, duplicate keys refused), ``--set`` overrides
applied, pydantic validation (:mod:`avits_core.config.schema`), relative paths resolved; every
error is one line naming the file, the field and the value (ConfigError).

Path rules: ``prompts.source``, ``evaluation.distribution.reference`` and
``evaluation.distribution.video.path`` relative paths are resolved against the folder of the config
file by :func:`load_config` (``base_dir`` of :func:`config_from_dict`); ``output_root`` is left as
given (relative to the working directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from avits_core.config.schema import RunConfig
from avits_core.errors import ConfigError


def _format_validation_error(exc: ValidationError, source: str) -> str:
    """One line: ``<source>: invalid config: <field>: <problem> (got <value>); <field>: ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        inp = err.get("input")
        shown = ""
        if not (isinstance(inp, (dict, list)) or inp is None) and err["type"] != "extra_forbidden":
            r = repr(inp)
            shown = f" (got {r if len(r) <= 80 else r[:77] + '...'})"
        parts.append(f"{loc}: {msg}{shown}")
    text = "; ".join(parts)
    return f"{source}: invalid config: " + " ".join(text.split())  # one line, whatever the messages hold


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # merge keys (<<) first: an override by a merge is not a duplicate
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}", key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key].line + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def load_yaml_text(text: str, source: str) -> Any:
    """Safe-load YAML (no Python objects), refusing duplicate keys; ConfigError names source, line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` -> (["a", "b", "c"], yaml-parsed VALUE)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. search.n=4)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""  # noqa: S506 - safe loader
    except (yaml.YAMLError, RecursionError) as exc:
        problem = _yaml_problem(exc) if isinstance(exc, yaml.YAMLError) else "nested too deeply"
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {problem}") from None
    keys = key.split(".")
    if any(not k.strip() for k in keys):
        raise ConfigError(f"--set {item!r}: empty key component in {key!r}")
    return [k.strip() for k in keys], value


def _index(node: list[Any], k: str, item: str, shown: str) -> int:
    if not k.isdigit():
        raise ConfigError(f"--set {item!r}: {shown} is not a valid list index (use 0, 1, ...)")
    i = int(k)
    if i >= len(node):
        raise ConfigError(f"--set {item!r}: {shown} is not a valid list index (the list has {len(node)} items)")
    return i


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b.c=VALUE`` overrides to a copy of ``data`` (list items by index: ``verifiers.0.weight``).

    A missing key makes a new mapping on the way; a key through a non-mapping, a bad or out-of-range
    list index, or an invalid YAML value is a one-line ConfigError naming the override."""
    import copy

    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping, got {type(data).__name__}")
    data = copy.deepcopy(data)
    # Switching a component (--set aggregator.name=rank) drops the old component's params from the file
    # (they belong to the old one); params given as overrides, before or after, still apply.
    for head, key in (("aggregator", "name"), ("generator", "name"), ("search", "method")):
        new = [parse_override(i)[1] for i in overrides if parse_override(i)[0] == [head, key]]
        if new and isinstance(data.get(head), dict) and new[-1] != data[head].get(key) and data[head].get("params"):
            data[head]["params"] = {}
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = data
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list):
                node = node[_index(node, k, item, ".".join(keys[: i + 1]))]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(keys[:i])} is not a mapping")
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[_index(node, last, item, ".".join(keys))] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item!r}: {'.'.join(keys[:-1])} is not a mapping")
    return data


def config_from_dict(data: dict[str, Any], *, base_dir: Path | None = None, source: str = "config") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    if cfg.storage:  # object-store options for this config's output_root and below (avits_core.store.fs)
        from avits_core.store.fs import set_storage_options

        set_storage_options(cfg.storage, root=cfg.output_root)
    for field, value in (("prompts.source", cfg.prompts.source), ("output_root", cfg.output_root)):
        if isinstance(value, str) and "\x00" in value:
            raise ConfigError(f"{source}: invalid config: {field}: contains a NUL character (got {value!r})")
    src = cfg.prompts.source
    try:
        if isinstance(src, str) and base_dir is not None and not Path(src).is_absolute():
            cfg.prompts.source = str((base_dir / src).resolve())
        dist = cfg.evaluation.distribution
        if dist is not None and base_dir is not None:  # the same rule as prompts.source
            if not Path(dist.reference).expanduser().is_absolute():
                dist.reference = str((base_dir / dist.reference).resolve())
            if dist.video is not None and not Path(dist.video.path).expanduser().is_absolute():
                dist.video.path = str((base_dir / dist.video.path).resolve())
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, symlink loops
        raise ConfigError(f"{source}: invalid config: a path cannot be resolved: {exc}") from None
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a YAML run config. Raises ConfigError naming the file and field."""
    from avits_core.prompts import read_text_file

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    data = load_yaml_text(read_text_file(path, "config file"), str(path))
    if data is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data, base_dir=path.resolve().parent, source=str(path))
