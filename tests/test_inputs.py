"""Text inputs as people really have them (issue 10, cases 1 and 6): BOMs, strict field counts,
CRLF, non-UTF-8 bytes, empty rows, long captions, JSONL/TSV, and names that would become paths."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pytest

from avits_core.config import load_config
from avits_core.errors import ConfigError, PromptError, StoreError
from avits_core.names import PROMPT_ID_MAX, UnsafeNameError, UnsafePathError, check_name, inside, is_safe_name
from avits_core.prompts import MAX_TEXT_CHARS, load_prompts
from avits_core.store import RunStore


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    f = tmp_path / name
    f.write_bytes(data)
    return f


# -- case 1: spreadsheets -------------------------------------------------------------------------

def test_excel_utf8_bom_csv_keeps_its_real_ids(tmp_path):
    body = "prompt_id,text,category\r\ns00,a red ball bounces once,full\r\ns01,a blue cube bounces twice,full\r\n"
    f = _write(tmp_path, "excel.csv", codecs.BOM_UTF8 + body.encode("utf-8"))
    prompts = load_prompts(f)
    assert [p.prompt_id for p in prompts] == ["s00", "s01"]  # not p0000, p0001
    assert [p.text for p in prompts] == ["a red ball bounces once", "a blue cube bounces twice"]
    assert prompts[0].meta == {"category": "full"}  # no '\ufeffprompt_id' key


def test_excel_utf16_unicode_text_export(tmp_path):
    body = "id\ttext\r\nv1\tun café\r\n"
    f = _write(tmp_path, "excel.tsv", body.encode("utf-16"))  # BOM + UTF-16LE
    [p] = load_prompts(f)
    assert (p.prompt_id, p.text) == ("v1", "un café")


def test_javisbench_id_column_after_bom(tmp_path):
    f = _write(tmp_path, "j.csv", codecs.BOM_UTF8 + b"id,text\nm1INxJfEzjQ_scene-1,a horse\n")
    assert load_prompts(f)[0].prompt_id == "m1INxJfEzjQ_scene-1"


def test_row_with_more_fields_than_header_is_an_error_naming_the_line(tmp_path):
    f = _write(tmp_path, "p.csv", b"prompt_id,text,category\na,fine,x\nb,a ball, then a cube,y\n")
    with pytest.raises(PromptError) as ei:
        load_prompts(f)
    msg = str(ei.value)
    assert msg == f"{f}: line 3: 4 fields, more than the header's 3 (an unquoted comma in a caption? quote the field)"


def test_row_with_fewer_fields_is_an_error_naming_the_line(tmp_path):
    f = _write(tmp_path, "p.csv", b"prompt_id,text,category\na,fine,x\nb,short\n")
    with pytest.raises(PromptError, match=r"line 3: 2 fields, fewer than the header's 3"):
        load_prompts(f)


def test_line_numbers_count_multiline_quoted_fields(tmp_path):
    # record 1 spans lines 2-3; the bad record starts on line 4
    f = _write(tmp_path, "p.csv", b'prompt_id,text\na,"two\nlines"\nb,x,extra\n')
    with pytest.raises(PromptError, match=r": line 4: 3 fields"):
        load_prompts(f)
    f2 = _write(tmp_path, "ok.csv", b'prompt_id,text\na,"two\nlines"\n')
    assert load_prompts(f2)[0].text == "two\nlines"  # inner line breaks kept


def test_quoted_comma_is_fine_and_crlf_and_cr_line_ends(tmp_path):
    for nl in (b"\r\n", b"\r", b"\n"):
        f = _write(tmp_path, "p.csv", b"prompt_id,text" + nl + b'a,"a ball, then a cube"' + nl + b"b,two" + nl)
        assert [(p.prompt_id, p.text) for p in load_prompts(f)] == [("a", "a ball, then a cube"), ("b", "two")]
    t = _write(tmp_path, "p.txt", b"first\r\n\r\n# c\r\nsecond\r\n")
    assert [p.text for p in load_prompts(t)] == ["first", "second"]


def test_empty_rows_are_skipped_and_generated_ids_follow_prompt_order(tmp_path):
    f = _write(tmp_path, "p.csv", b"\ntext,category\none,x\n\n,\ntwo,y\n,,\n")
    prompts = load_prompts(f)
    assert [(p.prompt_id, p.text) for p in prompts] == [("p0000", "one"), ("p0001", "two")]


def test_row_with_id_but_no_text_is_an_error(tmp_path):
    f = _write(tmp_path, "p.csv", b"prompt_id,text\na,\n")
    with pytest.raises(PromptError, match=r"line 2: prompt 'a' has empty text"):
        load_prompts(f)


def test_non_utf8_byte_names_line_and_column(tmp_path):
    f = _write(tmp_path, "p.csv", b"prompt_id,text\na,fine\nb,caf\xe9 au lait\n")  # latin-1 e-acute
    with pytest.raises(PromptError) as ei:
        load_prompts(f)
    assert str(ei.value) == f"{f}: line 3, column 6: byte 0xe9 is not UTF-8 (save the file as UTF-8)"
    t = _write(tmp_path, "p.txt", codecs.BOM_UTF8 + b"ok\n\xff\n")
    with pytest.raises(PromptError, match=r"line 2, column 1: byte 0xff"):
        load_prompts(t)


def test_duplicate_and_case_colliding_ids(tmp_path):
    f = _write(tmp_path, "p.csv", b"prompt_id,text\na,x\nb,y\na,z\n")
    with pytest.raises(PromptError, match=r"line 4: duplicate prompt_id 'a' \(first at line 2\)"):
        load_prompts(f)
    g = _write(tmp_path, "q.csv", b"prompt_id,text\nClip1,x\nclip1,y\n")
    with pytest.raises(PromptError, match=r"line 3: prompt id 'clip1' differs from 'Clip1' \(line 2\) only in case"):
        load_prompts(g)


def test_long_captions(tmp_path):
    ok = "a ball " * 1000  # 7,000 characters: kept whole
    f = _write(tmp_path, "p.csv", f"prompt_id,text\na,{ok}\n".encode())
    assert load_prompts(f)[0].text == ok.strip()
    big = "x" * (MAX_TEXT_CHARS + 1)
    g = _write(tmp_path, "q.csv", f"prompt_id,text\na,{big}\n".encode())
    with pytest.raises(PromptError, match=rf"line 2, field 'text': the text is {MAX_TEXT_CHARS + 1} characters long"):
        load_prompts(g)


def test_unclosed_quote_and_nul_and_header_problems(tmp_path):
    f = _write(tmp_path, "p.csv", b'prompt_id,text\na,"never closed\nb,x\n')
    with pytest.raises(PromptError, match="malformed CSV"):
        load_prompts(f)
    g = _write(tmp_path, "q.csv", b"prompt_id,text\na,bad\x00text\n")
    with pytest.raises(PromptError, match=str(g)):
        load_prompts(g)
    h = _write(tmp_path, "h.csv", b"prompt_id,text,text\na,x,y\n")
    with pytest.raises(PromptError, match="line 1: header names column 'text' twice"):
        load_prompts(h)


def test_jsonl_prompts(tmp_path):
    f = _write(tmp_path, "p.jsonl", codecs.BOM_UTF8 + b'{"prompt_id": "a", "text": "one", "cat0_ind": "2"}\r\n\r\n'
               b'{"id": 7, "text": " two "}\n')
    prompts = load_prompts(f)
    assert [(p.prompt_id, p.text) for p in prompts] == [("a", "one"), ("7", "two")]
    assert prompts[0].categories == {"cat0": "2"}
    for body, needle in [(b'{"text": "x"}\n[1]\n', "line 2: expected a JSON object"),
                         (b'{"text": "x"}\n{"text": 3}\n', "line 2, field 'text': expected a string"),
                         (b'{"text": "x"}\n{bad\n', "line 2: not valid JSON"),
                         (b'{"caption": "x"}\n', "line 1: no 'text' key")]:
        g = _write(tmp_path, "g.jsonl", body)
        with pytest.raises(PromptError, match=needle):
            load_prompts(g)


# -- case 6: names used as paths ----------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../../../../x", "/abs/path", "a/b", "a\\b", "..", ".", ".hidden", "",
                                 "nul\x00byte", "with space", "x" * (PROMPT_ID_MAX + 1), "é"])
def test_unsafe_prompt_ids_are_refused_with_the_line(tmp_path, bad):
    f = tmp_path / "p.jsonl"
    import json

    f.write_text(json.dumps({"prompt_id": "ok", "text": "x"}) + "\n" + json.dumps({"prompt_id": bad, "text": "y"}) + "\n")
    with pytest.raises(PromptError) as ei:
        load_prompts(f)
    msg = str(ei.value)
    assert msg.startswith(f"{f}: line 2, field 'prompt_id': prompt id ") and "\n" not in msg
    # CSV too (NUL cannot be written as a CSV field)
    if "\x00" not in bad and bad:
        g = tmp_path / "p.csv"
        g.write_text(f'prompt_id,text\nok,x\n"{bad}",y\n')
        with pytest.raises(PromptError, match=r": line 3, field 'prompt_id': prompt id"):
            load_prompts(g)


def test_safe_names_that_real_datasets_use():
    for good in ["s00", "m1INxJfEzjQ_scene-1", "-0Gj8-vB1q4_000030", "a.b", "run=1+2", "x" * PROMPT_ID_MAX]:
        assert is_safe_name(good)
    with pytest.raises(UnsafeNameError, match=r"^--selection: selection id '\.\./x' starts with '\.'"):
        check_name("../x", "selection id", where="--selection")
    with pytest.raises(UnsafeNameError, match="selection id 'a/b' contains '/'"):
        check_name("a/b", "selection id")


def test_run_id_and_name_are_checked_by_the_config(tmp_path):
    base = "prompts: {source: [a ball]}\nverifiers: [{name: av_sync}]\n"
    for extra, needle in [("run_id: ../x\n", "run_id: run id '../x' starts with '.'"),
                          ("run_id: /abs\n", "run_id: run id '/abs' contains '/'"),
                          (f"name: {'n' * 200}\n", "name: run name"),
                          ("run_id: a\\x00b\n", "run_id")]:
        f = tmp_path / "c.yaml"
        f.write_text(base + extra)
        with pytest.raises(ConfigError) as ei:
            load_config(f)
        assert needle in str(ei.value) and "\n" not in str(ei.value)


def test_store_refuses_bad_run_ids_and_escaping_paths(tmp_path):
    for bad in ["../x", "/abs", "a/b", ".", "x" * 201]:
        with pytest.raises(StoreError):
            RunStore(tmp_path, bad)
    st = RunStore(tmp_path, "-0Gj8_ok").create()  # a leading '-' is a safe single component
    assert st.inside("media/s00/c.mp4") == (st.path / "media/s00/c.mp4").resolve()
    for bad in ["../escape.mp4", "media/../../x.mp4", "/etc/passwd"]:
        with pytest.raises(UnsafePathError, match="leaves the folder"):
            st.inside(bad)
    os.symlink(tmp_path, st.path / "media" / "link")
    with pytest.raises(UnsafePathError):
        inside(st.path, "media/link/x.mp4")  # a symlink pointing out is refused too
    rows = [dict(prompt_id="s00", prompt_index=0, candidate_id="c0", search="best_of_n", generation=0, step=0,
                 seed=1, generator="synth", nfe=1, media_path="media/../../x.mp4", prompt_text="x")]
    with pytest.raises(StoreError, match="media_path"):
        st.append("candidates", rows)


@pytest.mark.parametrize("raw, says", [(b"[1, 2]", "must hold a JSON object, got list"),
                                       (b'{"config": ', "is not valid JSON"),
                                       (b"\xff\xfe{}", "is not valid JSON")])
def test_a_run_json_that_is_not_a_json_object_is_one_error_naming_the_file(tmp_path, raw, says):
    """Every reader of an existing run folder's run.json (pre-flight, `avits run` of a finished run, the
    benchmark comparison) refuses a run.json that is not a JSON object with one error naming the file;
    a list used to come back as is and fail later with a TypeError."""
    from typer.testing import CliRunner

    from avits import cli
    from avits_core.checks.inputs import read_run_json
    from helpers import tiny_config_file

    cfg_path = tiny_config_file(tmp_path, run_id="broken")
    folder = tmp_path / "runs" / "broken"
    folder.mkdir(parents=True)
    (folder / "run.json").write_bytes(raw)
    with pytest.raises(ConfigError, match=rf"run.json.*{says}"):
        read_run_json(folder)
    assert read_run_json(tmp_path / "runs" / "none") is None
    res = CliRunner().invoke(cli.app, ["run", str(cfg_path)])
    assert res.exit_code == 2 and "run.json" in res.output and says in res.output, res.output
    assert (folder / "run.json").read_bytes() == raw  # nothing stored is touched
