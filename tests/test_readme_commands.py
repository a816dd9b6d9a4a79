"""Every `rdistill` command in the README's quickstart runs as written, against the test server and a tiny student.

The commands are read from README.md itself, so the README cannot drift from the CLI. Only what a new user would
change is substituted: the teacher model and its URL (the test server instead of OpenAI), the student (a tiny
local model instead of a hub download) and the data files (arithmetic problems with gold answers).
"""

import re
import shlex
from pathlib import Path

import pytest
from conftest import write_problems

from rationale_distill.testing.tiny import make_tiny_student

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quickstart") : text.index("### Generation")]
    return [c for c in re.findall(r"`(rdistill [^`]+)`", section) if not c.startswith("rdistill run ")]


def test_the_quickstart_table_has_every_stage():
    stages = [c.split()[1] for c in quickstart_commands()]
    assert stages == ["generate", "build", "train", "eval", "plugins"], stages


def test_every_quickstart_command_runs_as_written(server, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_problems(tmp_path / "data.jsonl", n=24, seed=3)
    (tmp_path / "data").mkdir()
    write_problems(tmp_path / "data" / "test.jsonl", n=6, seed=4)
    texts = [f"[label] Q: What is {a} + {b}? {a + b} [rationale] We compute {a} + {b} = {a + b}." for a in range(40) for b in range(0, 40, 7)]
    tiny = make_tiny_student(tmp_path / "tiny", texts)
    for command in quickstart_commands():
        args = shlex.split(command)[1:]
        args = [{"openai/gpt-4o-mini": "openai/fake", "Qwen/Qwen2.5-0.5B": str(tiny)}.get(a, a) for a in args]
        if args[0] == "generate":
            args += ["--api-base", server.base_url, "--retry-base-delay", "0.01"]
        if args[0] == "train":
            args += ["--batch-size", "8"]  # the command as written, made quick for a tiny model
        code, stdout, err = cli(*args)
        assert code == 0, f"{command}\n{err}"
    report = tmp_path / "runs" / "math" / "report" / "report.json"
    assert report.is_file() and (tmp_path / "runs" / "math" / "student" / "rdistill_train.json").is_file()


DOCS = [README, *sorted((README.parent / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, args) of every `rdistill ...` (or `-m rationale_distill.cli ...`) command in the README and docs/, in
    inline code and code blocks; a bare mention (`rdistill build`) or an elided one (`...`) is not a command."""
    found = []
    for doc in DOCS:
        for m in re.finditer(r"(?:\brdistill|-m rationale_distill\.cli) ([^`\n|#]+)", doc.read_text()):
            args = shlex.split(m.group(1))
            if "..." in args or (len(args) < 2 and args[0] not in ("demo", "plugins")):
                continue
            found.append((doc.name, args))
    return found


def test_every_documented_command_parses_and_every_run_config_validates():
    """Commands beyond the quickstart need a real provider, a GPU or the 10-minute demo, so here each is parsed by
    the real CLI (a renamed or removed flag fails) and every YAML given to `rdistill run` is validated as the run
    would validate it before spending anything. The quickstart commands run in full above; `rdistill demo --quick`
    runs in tests/test_pipeline.py."""
    from rationale_distill.cli import build_parser
    from rationale_distill.pipeline import load_run_config, stage_configs
    from rationale_distill.plugins import load_plugins

    parser = build_parser(load_plugins())
    commands = documented_commands()
    assert len(commands) >= 8 and {a[0] for _, a in commands} >= {"generate", "build", "train", "eval", "run", "demo"}
    for doc, args in commands:
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{doc}: `rdistill {' '.join(args)}` does not parse")
        if args[0] == "run":
            config = README.parent / args[1]
            assert config.is_file(), f"{doc}: `rdistill run {args[1]}`: no such file"
            stage_configs(load_run_config(config))
