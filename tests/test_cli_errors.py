"""Bad input: a one-line error naming the file, line, field or flag; a non-zero exit; no partial output."""

import pytest
from conftest import gen_args


@pytest.mark.parametrize(
    "setup,args,match",
    [
        (None, ["--teacher", "nope"], "--teacher 'nope': unknown teacher"),
        (None, ["--prompt", "no-such-prompt"], "--prompt 'no-such-prompt': no such prompt"),
        ("bad_yaml", ["--prompt", "{tmp}/bad.yaml"], "bad.yaml:3: invalid YAML: expected ',' or ']'"),
        ("malformed", [], "problems.jsonl:3: malformed JSON line"),
        ("missing_field", [], "problems.jsonl:2: --input-field 'question' is not in the row"),
        ("missing_file", [], "problems.jsonl: no such file"),
        (None, ["--input-field", "nope"], "problems.jsonl:1: --input-field 'nope' is not in the row"),
        (None, ["--label-field", "nope"], "--label-field 'nope' is not in the row"),
        (None, ["--price", "cheap"], "--price 'cheap': expected two numbers"),
        ("bad_label", [], "problems.jsonl:1: gold label: answer 'many' is not a number"),
    ],
)  # fmt: skip
def test_bad_input_gives_one_line_error_and_no_output(server, problems, tmp_path, cli, setup, args, match):
    if setup == "bad_yaml":
        (tmp_path / "bad.yaml").write_text("name: x\ntemplate: [oops\n")
    elif setup == "malformed":
        lines = problems.read_text().splitlines()
        lines[2] = "{not json"
        problems.write_text("\n".join(lines) + "\n")
    elif setup == "missing_field":
        lines = problems.read_text().splitlines()
        lines[1] = '{"q": "x", "answer": 1}'
        problems.write_text("\n".join(lines) + "\n")
    elif setup == "missing_file":
        problems.unlink()
    elif setup == "bad_label":
        problems.write_text('{"question": "What is 1 + 1?", "answer": "many"}\n')
    out = tmp_path / "t.jsonl"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = gen_args(server, problems, out)
    for flag in ("--input-field", "--label-field", "--teacher"):
        if flag in args and flag in base:
            i = base.index(flag)
            del base[i : i + 2]
    code, stdout, err = cli(*base, *args)
    assert code != 0
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert match in err
    assert not out.exists() and not list(tmp_path.glob(".t.jsonl*"))
    assert len(server.requests) == 0


def test_out_is_required(problems, cli):
    code, _, err = cli("generate", problems, "--input-field", "question")
    assert code == 2 and "--out is required" in err


def test_unknown_config_key_is_named(problems, tmp_path, cli):
    cfg = tmp_path / "g.yaml"
    cfg.write_text("sampels: 3\n")
    code, _, err = cli("generate", problems, "--config", cfg, "--out", tmp_path / "o.jsonl")
    assert code == 2 and "unknown setting 'sampels'" in err
