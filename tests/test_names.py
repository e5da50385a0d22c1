"""Names that become paths (issue 10, case 6 leftovers): Windows device names, a trailing dot, and
path lengths checked by ``names.inside`` / ``RunStore.inside`` before anything is written."""

from __future__ import annotations

import pytest

from avits_core.names import (COMPONENT_MAX_BYTES, PATH_MAX_BYTES, UnsafeNameError, UnsafePathError, check_components,
                              check_name, check_prompt_id, inside, is_safe_name, windows_device)

DEVICES = ["CON", "con", "Con", "PRN", "aux", "NUL", "nul.txt", "Con.txt", "com1", "COM9.tar.gz", "lpt0", "LPT9.mp4",
           "com0"]
NOT_DEVICES = ["COM10", "LPT", "console", "nullable", "auxiliary", "prn_1", "a.con", "x.nul", "_CON", "CON_1", "con-x"]


@pytest.mark.parametrize("name", DEVICES)
def test_windows_device_names_are_refused_in_any_case_with_any_extension(name):
    assert windows_device(name) == name.split(".")[0].upper()
    assert not is_safe_name(name)
    with pytest.raises(UnsafeNameError, match=rf"run id '{name}' is the Windows device name {name.split('.')[0].upper()}"):
        check_name(name, "run id")
    with pytest.raises(UnsafeNameError, match="Windows device name"):
        check_prompt_id(name, where="prompts.csv: line 2")


@pytest.mark.parametrize("name", NOT_DEVICES)
def test_names_that_only_look_like_devices_are_kept(name):
    assert windows_device(name) is None
    assert check_name(name, "selection id") == name


def test_a_trailing_dot_is_refused():
    for name in ("a.", "p01..", "x.y."):
        with pytest.raises(UnsafeNameError, match=r"ends with '\.'"):
            check_name(name, "label")
    assert check_name("a.b", "label") == "a.b"


def test_prompt_file_with_a_device_id_is_refused_naming_the_line(tmp_path):
    from avits_core.errors import ConfigError
    from avits_core.prompts import load_prompts

    f = tmp_path / "p.csv"
    f.write_text("id,text\np1,a red ball\nAUX,a blue cube\n", encoding="utf-8")
    with pytest.raises(ConfigError) as ei:  # the loader's PromptError, naming file, line and field
        load_prompts(str(f))
    msg = str(ei.value)
    assert "line 3" in msg and "'AUX'" in msg and "Windows device name AUX" in msg


def test_inside_refuses_long_components_and_paths_before_writing(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    ok = "m" * COMPONENT_MAX_BYTES
    assert inside(root, f"media/{ok}") == (root / "media" / ok).resolve()
    for rel in (f"media/{'m' * (COMPONENT_MAX_BYTES + 1)}.mp4",  # 1 byte over, as a file name
                f"{'d' * 300}/x.mp4",                             # a folder name
                "media/" + "é" * 128):                            # 256 bytes of UTF-8 in 128 characters
        with pytest.raises(UnsafePathError, match=r"has a component of \d+ bytes \(at most 255\)"):
            inside(root, rel)
    deep = "/".join(["d" * 200] * 21)  # every component fine, the whole path over 4095 bytes
    with pytest.raises(UnsafePathError, match=rf"bytes long \(at most {PATH_MAX_BYTES}\)"):
        inside(root, deep)
    assert list(root.iterdir()) == []  # nothing was made


def test_inside_refuses_a_device_name_component(tmp_path):
    for rel in ("media/NUL/c.mp4", "latents/p/com1.pt", "aux"):
        with pytest.raises(UnsafePathError, match="Windows device name"):
            inside(tmp_path, rel)
    with pytest.raises(UnsafePathError, match="Windows device name"):
        check_components("media/lpt1.mp4")  # the object-store branch of RunStore.inside uses this
    # the root itself is the user's choice: only what a writer adds below it is checked
    con_root = tmp_path / "CON"
    con_root.mkdir()
    assert inside(con_root, "media/x.mp4") == (con_root / "media" / "x.mp4").resolve()


def test_run_store_inside_checks_lengths_on_every_backend(tmp_path):
    from avits_core.store.parquet import RunStore

    local = RunStore(tmp_path / "runs", "r1")
    with pytest.raises(UnsafePathError, match="component of 300 bytes"):
        local.inside("media/p/" + "c" * 300)
    remote = RunStore("memory://bucket/runs", "r1")
    assert remote.remote
    with pytest.raises(UnsafePathError, match="component of 300 bytes"):
        remote.inside("media/p/" + "c" * 300)
    with pytest.raises(UnsafePathError, match="Windows device name PRN"):
        remote.inside("media/prn.mp4")
    assert str(remote.inside("media/p/c.mp4")).endswith("runs/r1/media/p/c.mp4")
