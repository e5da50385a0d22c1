"""Pre-flight checks of the models a run will load: the generator's parameters (and with ``models`` its
weights: ``ltx2``'s own doctor, a plugin's ``doctor()`` hook), every guided and evaluation verifier
(constructed with its params, which never loads weights; with ``models`` its ``check_ready()``), the
set-level distribution metrics' reference clips and feature extractors, and a CUDA device this
machine lacks. Each returns finding lines (:mod:`avits_core.checks.base`).
"""

from __future__ import annotations

from typing import Any

from avits_core.checks.base import CheckState, finding
from avits_core.errors import AvitsError, ConfigError, MissingWeightsError

__all__ = ["bind_line", "device_line", "distribution_lines", "generator_lines", "verifier_lines"]


def device_line(what: str, device: Any) -> str | None:
    """ERROR when ``device`` names a CUDA device this machine does not have; None when fine."""
    if device is None or not str(device).startswith("cuda"):
        return None
    try:
        from avits_core.loading import check_device

        check_device(device, what=what)  # the same check a generator makes before loading weights
    except ConfigError as exc:
        return f"ERROR: {exc}"
    except ImportError as exc:
        return f"ERROR: {what}: cannot check device {str(device)!r} ({exc})"
    return None


def bind_line(what: str, cls: type, params: dict[str, Any]) -> str | None:
    """ERROR when ``params`` do not fit the constructor's signature (unknown or missing names)."""
    import inspect

    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):  # builtins / C classes: nothing to check
        return None
    try:
        sig.bind(**params)
    except TypeError as exc:
        return f"ERROR: {what}: params {params} do not fit {cls.__qualname__}{sig}: {exc}"
    return None


def generator_lines(st: CheckState) -> list[str]:
    from avits_core.registry import GENERATORS

    name, params = st.cfg.generator.name, dict(st.cfg.generator.params)
    what = f"generator {name}"
    try:
        cls = GENERATORS.get_class(name)
    except Exception as exc:  # UnknownNameError, or the plugin's import failing
        return [f"ERROR: generator {name!r}: {exc}. A plugin generator must be installed in this environment "
                f"and declare an entry point in the group 'avits.generators' (docs/plugins.md)"]
    validate = getattr(cls, "validate_params", None)
    try:
        if callable(validate):
            validate(params)
        elif name == "synth" or getattr(cls, "needs_weights", None) is False:
            cls(**params)  # weight-free: constructing it is the check (and cheap)
        else:
            bad = bind_line(what, cls, params)
            if bad:
                return [bad]
    except AvitsError as exc:
        return [f"ERROR: generator.params: {exc}"]
    except Exception as exc:  # noqa: BLE001 - a bad parameter is a finding
        return [f"ERROR: generator.params: {name}: {type(exc).__name__}: {exc}"]
    if name == "synth":
        return ["ok: generator synth (embedded SynthAV world) needs no weights"]
    if not st.models:
        return [f"ok: generator {name} parameters"]
    if name == "ltx2":
        from avits_core.generators.ltx2 import ltx2_doctor

        out = []
        for line in ltx2_doctor(params.get("model_path"), params.get("device", "cpu")):
            head, _, rest = finding(line).partition(": ")
            out.append(f"{head}: generator ltx2: {rest}")
        return out
    where = f"{cls.__module__}.{cls.__qualname__}"
    lines = []
    dev = device_line(what, params.get("device"))
    if dev:
        lines.append(dev)
    hook = getattr(cls, "doctor", None)
    if callable(hook):
        try:
            found = hook(**params)
            lines += [f"ok: generator {name} ({where})"] + [finding(str(x)) for x in found]
        except Exception as exc:  # noqa: BLE001 - a broken hook is a finding
            lines.append(f"ERROR: generator {name}: its doctor() hook failed: {type(exc).__name__}: {exc}")
        return lines
    return lines + [f"WARNING: generator {name} ({where}) is importable but has no doctor() hook; "
                    f"its weights and device are not checked here"]


def verifier_lines(st: CheckState, name: str, params: dict[str, Any], role: str) -> list[str]:
    from avits_core.registry import VERIFIERS

    what = f"verifier {name} ({role})"
    try:
        v = VERIFIERS.create(name, **params)
    except AvitsError as exc:
        return [f"ERROR: {what}: {exc}"]
    except Exception as exc:  # bad params (TypeError), optional dependency missing
        return [f"ERROR: {what}: cannot be created with params {params}: {type(exc).__name__}: {exc}"]
    st.verifiers[(role, name)] = v
    lines = []
    device = getattr(v, "device", None) or getattr(getattr(v, "backbone", None), "device", None)
    dev = device_line(what, device)
    if dev:
        lines.append(dev)
    if not st.models:
        return lines + [f"ok: {what} v{v.version} parameters"]
    try:
        v.check_ready()
    except MissingWeightsError as exc:
        return lines + [f"MISSING: {what}: {exc}"]
    except AvitsError as exc:
        return lines + [f"ERROR: {what}: {exc}"]
    except Exception as exc:  # noqa: BLE001
        return lines + [f"ERROR: {what}: {type(exc).__name__}: {exc}"]
    weights = " (weights found)" if getattr(v, "needs_weights", False) else " (needs no weights)"
    return lines + [f"ok: {what} v{v.version} ready{weights}"]


def distribution_lines(st: CheckState) -> list[str]:
    dist = st.cfg.evaluation.distribution
    if dist is None:
        return []
    try:
        files = dist.reference_files()
    except AvitsError as exc:
        return [f"ERROR: {exc}"]
    out = [f"ok: evaluation.distribution: {len(files)} reference clips"]
    if not st.models:
        return out
    try:
        from avits_core.metrics.features import ClapAudioEmbedding, I3DVideoFeatures

        if dist.video is not None:
            v = dist.video
            I3DVideoFeatures(v.path, device=v.device, num_frames=v.num_frames, size=v.size,
                             batch_size=v.batch_size, sampling=v.sampling).check_ready()
        if dist.audio is not None:
            a = dist.audio
            ClapAudioEmbedding(a.model_path, device=a.device, batch_size=a.batch_size).check_ready()
    except MissingWeightsError as exc:
        return out + [f"MISSING: evaluation.distribution: {exc}"]
    except AvitsError as exc:
        return out + [f"ERROR: evaluation.distribution: {exc}"]
    return out + ["ok: evaluation.distribution feature extractors ready"]
