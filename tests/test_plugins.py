import inspect
import json
import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

import rationale_distill as rd
from rationale_distill import hookspecs
from rationale_distill.errors import PluginError
from rationale_distill.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]


class DupTeacher:
    __name__ = "dup-teacher-plugin"

    @rd.hookimpl
    def register_teachers(self, register):
        register("litellm", lambda **kw: None)


def test_builtins_register_through_the_public_hooks():
    plugins = load_plugins()
    assert {"litellm", "dspy"} <= set(plugins.teachers.names())
    assert {"few-shot-cot", "zero-shot-cot", "support-triage"} <= set(plugins.prompts.names())
    assert {"answer-marker", "json", "dspy"} <= set(plugins.parsers.names())
    assert {"jsonl", "json", "csv"} <= set(plugins.loaders.names())
    assert {"generate", "plugins"} <= set(plugins.commands.names())
    assert all(e.plugin.startswith("rationale_distill.default_plugins.") for e in plugins.teachers)


def test_duplicate_name_is_an_error_naming_both_plugins():
    with pytest.raises(PluginError, match=r"duplicate teacher name 'litellm'.*default_plugins.teachers.*dup-teacher-plugin"):
        load_plugins(extra=[DupTeacher()])


def test_misspelled_hook_fails_loudly():
    class Typo:
        @rd.hookimpl
        def register_teacher(self, register):  # missing "s"
            pass

    with pytest.raises(PluginError, match="register_teacher"):
        load_plugins(extra=[Typo()])


def test_hook_register_loaders(tmp_path):
    class TsvLoader:
        @rd.hookimpl
        def register_loaders(self, register):
            def load(path):
                for i, line in enumerate(open(path), start=1):
                    q, a = line.rstrip("\n").split("\t")
                    yield i, {"question": q, "answer": a}

            register("tsv", load, extensions=(".tsv",))

    data = tmp_path / "d.tsv"
    data.write_text("What is 1 + 2?\t3\n")
    from rationale_distill.generation.generate import load_rows

    assert load_rows(load_plugins(extra=[TsvLoader()]), str(data)) == [(f"{data}:1", {"question": "What is 1 + 2?", "answer": "3"})]


def test_hook_register_teachers(problems):
    class Constant(rd.Teacher):
        name = "constant"

        async def complete(self, request):
            return rd.Completion(choices=[rd.Choice("Easy. So the answer is 42.")], usage={"prompt_tokens": 1, "completion_tokens": 5})

    class Plugin:
        @rd.hookimpl
        def register_teachers(self, register):
            register("constant", lambda model=None, **kw: Constant())

    plugins = load_plugins(extra=[Plugin()])
    result = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["constant"], input_field="question"), plugins=plugins)
    assert {r.majority for r in result.records} == {"42"}


def test_hook_register_prompts(tmp_path):
    class Plugin:
        @rd.hookimpl
        def register_prompts(self, register):
            register("plain", {"name": "plain", "template": "{input}"})

    from rationale_distill.generation.prompts import resolve_prompt

    assert resolve_prompt(load_plugins(extra=[Plugin()]), "plain").render({"input": "hi"})[0] == [{"role": "user", "content": "hi"}]


def test_hook_register_parsers(server, problems):
    class Plugin:
        @rd.hookimpl
        def register_parsers(self, register):
            from rationale_distill.generation.parsing import Parsed

            register("last-word", lambda text, spec, fields=None: Parsed(rationale=text, raw_answer=text.split()[-1]))

    plugins = load_plugins(extra=[Plugin()])
    prompt = {"name": "p", "template": "{input}", "parser": "last-word"}
    plugins.prompts.add("test", "p", prompt)
    result = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["openai/fake"], api_base=server.base_url,
                                           prompt="p", input_field="question"), plugins=plugins)  # fmt: skip
    sample = result.records[0].samples[0]
    assert sample.rationale == sample.text and sample.answer == sample.text.split()[-1].rstrip(".")  # the plugin parsed it


def test_hook_register_litellm_providers(problems):
    """A teacher that is not an HTTP API goes through LiteLLM as a custom provider, and through our records."""

    class Plugin:
        @rd.hookimpl
        def register_litellm_providers(self, register):
            def factory():
                import litellm

                class Echo(litellm.CustomLLM):
                    async def acompletion(self, model, messages, *args, **kwargs):
                        return litellm.ModelResponse(
                            choices=[{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": f"Echo. So the answer is {len(messages)}."}}],
                            usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})  # fmt: skip

                return Echo()

            register("echo-provider", factory)

    result = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["echo-provider/any"], input_field="question"),
                         plugins=load_plugins(extra=[Plugin()]))  # fmt: skip
    sample = result.records[0].samples[0]
    assert sample.answer == "8" and sample.usage == {"prompt_tokens": 3, "completion_tokens": 4} and sample.cost == 0.0


def test_hook_register_commands(capsys):
    class Plugin:
        @rd.hookimpl
        def register_commands(self, register):
            register("hello", lambda p: p.add_argument("--who", default="world"),
                     lambda args, plugins: print(f"hello {args.who}") or 0, help="say hello")  # fmt: skip

    from rationale_distill.cli import build_parser

    plugins = load_plugins(extra=[Plugin()])
    args = build_parser(plugins).parse_args(["hello", "--who", "you"])
    assert args.run(args, plugins) == 0 and capsys.readouterr().out == "hello you\n"


def test_hook_register_filters():
    from rationale_distill.hookspecs import register_filters

    class Plugin:
        @rd.hookimpl
        def register_filters(self, register):
            register("never", lambda **kw: (lambda cand, ctx: "never keep"))

    plugins = load_plugins(extra=[Plugin()])
    assert plugins.filters.get("never")()(None, None) == "never keep"
    assert register_filters.__doc__


MAJORITY_PLUGIN = """
import json, time
from dataclasses import dataclass
from pathlib import Path
import rationale_distill as rd
from rationale_distill.config import option, to_dict
from rationale_distill.training import begin_output, finish_output
from rationale_distill.training.labels import read_class_data

@dataclass
class MajorityConfig:
    majority_tie: str = option("first", help="majority: which class wins a tie", choices=("first", "last"))

def train_majority(config, settings):
    data = read_class_data(config.data)
    counts = {c: sum(e.label == c for e in data.splits["train"]) for c in data.classes}
    best = max(counts.values())
    ties = [c for c in data.classes if counts[c] == best]
    out = Path(config.out)
    begin_output(out)
    (out / "class.txt").write_text(ties[0] if settings.majority_tie == "first" else ties[-1])
    finish_output(out, {"config": to_dict(config), "student_kind": "classifier", "dataset": data.report, "log_history": [],
                        "parameters": 0, "trainable_parameters": 0, "device": "cpu", "train_runtime_s": 0.0,
                        "student_base": "majority class", "classes": data.classes, "data": data.summary(), "versions": {}})
    return out

class Majority:
    reads = "input"
    parameters = 0
    def __init__(self, folder):
        self.answer = (Path(folder) / "class.txt").read_text()
    def predict(self, inputs, batch_size=64):
        return [self.answer] * len(inputs), [1e-6] * len(inputs)
    def tokens(self, text):
        return len(text.split())

@rd.hookimpl
def register_trainers(register):
    register("majority", train_majority, config=MajorityConfig, load=lambda folder, device="cpu": Majority(folder), default_student="none")
"""


def test_hook_register_trainers(tmp_path, cli):
    """A third-party trainer with its own config and loader: its flags appear on `rdistill train`, its settings
    reach it checked, and `rdistill eval` asks its students through its `load`, in the same report."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "majority.py").write_text(MAJORITY_PLUGIN)
    data = tmp_path / "data"
    data.mkdir()
    (data / "build.json").write_text(json.dumps({"student_input": {}, "config": {"mode": "label-only"}}))
    rows = [{"task": "label", "input": f"q{i}", "label": "b" if i % 3 else "a", "gold": "b" if i % 3 else "a"} for i in range(9)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    (data / "test.jsonl").write_text("".join(json.dumps({**r, "prompt": r["input"], "completion": r["label"]}) + "\n" for r in rows[6:]))
    plugins = ["--plugins-dir", tmp_path / "plugins"]
    from rationale_distill.cli import build_parser

    parser = build_parser(load_plugins(plugins_dirs=[tmp_path / "plugins"]))
    train_parser = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    assert "--majority-tie" in train_parser.format_help()
    code, _, err = cli(*plugins, "train", data, "--trainer", "majority", "--majority-tie", "middle", "--out", tmp_path / "s")
    assert code == 2 and "majority_tie (--majority-tie) = 'middle': choose one of first, last" in err
    code, _, err = cli(*plugins, "train", data, "--trainer", "majority", "--majority-tie", "last", "--out", tmp_path / "s")
    assert code == 0, err
    code, out, err = cli(*plugins, "eval", tmp_path / "s", "--out", tmp_path / "r")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["student"]["kind"] == "majority" and report["student"]["accuracy"] == pytest.approx(2 / 3)
    code, _, err = cli("eval", tmp_path / "s")  # without the plugin that wrote it
    assert code == 2 and "written by --trainer majority, which no loaded plugin registers" in err


def test_hook_register_soft_targets(tmp_path, make_server):
    """A third-party source of soft targets (here: the uniform distribution, i.e. label smoothing as KD) is picked by
    name and trained on through the same trainer as the built-in ones."""
    import torch

    from rationale_distill.data.dataset import BuildConfig, build
    from rationale_distill.testing.tiny import make_tiny_student
    from rationale_distill.training import TrainConfig, train
    from rationale_distill.training.kd import SoftTargets, completion_mask, divergence

    class Uniform(SoftTargets):
        name = "uniform"

        def features(self, row, item, prompt_len):
            self.count("rows")
            return {"kd_mask": completion_mask(len(item["input_ids"]), prompt_len)}

        def per_token(self, trainer, model, inputs, extra, kd_mask, hidden, logits):
            s = logits.float().log_softmax(-1)  # (N, V): the student's logits at the target positions
            return divergence(s, torch.full_like(s, -math.log(s.shape[-1])), self.settings.beta)

    class OldStyle(Uniform):  # written for full (B, T, V) logits, as sources were before the head ran at target positions only
        name = "old-style"
        def per_token(self, trainer, model, inputs, extra, kd_mask, hidden, logits):
            return super().per_token(trainer, model, inputs, extra, kd_mask, hidden, logits[kd_mask > 0])

    class Scalar(Uniform):  # one number for the batch, not one per target position
        name = "scalar"
        def per_token(self, trainer, model, inputs, extra, kd_mask, hidden, logits):
            return super().per_token(trainer, model, inputs, extra, kd_mask, hidden, logits).mean()

    class Plugin:
        @rd.hookimpl
        def register_soft_targets(self, register):
            register("uniform", Uniform)
            register("old-style", OldStyle)
            register("scalar", Scalar)

    plugins = load_plugins(extra=[Plugin()])
    assert {"teacher", "logprobs", "votes", "uniform"} <= set(plugins.soft_targets.names())
    from conftest import write_problems

    server = make_server()
    data = write_problems(tmp_path / "p.jsonl", n=8)
    rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=server.base_url, input_field="question",
                                  label_field="answer", out=str(tmp_path / "t.jsonl")))  # fmt: skip
    build(str(tmp_path / "t.jsonl"), BuildConfig(records=str(tmp_path / "t.jsonl"), out=str(tmp_path / "d"), test_fraction=0, validation_fraction=0))
    make_tiny_student(tmp_path / "tiny", ["Q: What is 1 + 2? 3"] * 20)
    config = TrainConfig(data=str(tmp_path / "d"), student=str(tmp_path / "tiny"), out=str(tmp_path / "s"), objective="kd",
                         kd_source="uniform", max_steps=2, logging_steps=1)  # fmt: skip
    meta = json.loads((train(config, plugins) / "rdistill_train.json").read_text())
    assert meta["soft_targets"]["train"]["rows"] == 8 and any(h.get("loss_kd", 0) > 0 for h in meta["log_history"])
    for name, what in (("old-style", "does not match the shape"), ("scalar", r"returned shape \(\), not")):
        with pytest.raises(PluginError, match=f"soft targets '{name}': per_token gets the student's logits .* at its \\d+ target positions.*{what}"):
            train(replace(config, kd_source=name, out=str(tmp_path / name)), plugins)
    with pytest.raises(Exception, match="unknown source of soft targets"):
        train(TrainConfig(data=str(tmp_path / "d"), student=str(tmp_path / "tiny"), out=str(tmp_path / "s2"), objective="kd", kd_source="uniform"))


def test_every_hook_has_a_test():
    """Keep the plugin surface honest: a new hook needs a test_hook_<name> here."""
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_")]
    tested = {n[len("test_hook_"):] for n in globals() if n.startswith("test_hook_")}
    assert hooks and set(hooks) <= tested, set(hooks) - tested


def test_dspy_teacher_runs_a_chain_of_thought_program_over_litellm(make_server, problems):
    def dspy_responder(body, i):
        q = body["messages"][-1]["content"]
        import re

        a, b = re.findall(r"What is (\d+) \+ (\d+)", q)[-1]
        return f"[[ ## reasoning ## ]]\n{a} plus {b} is {int(a) + int(b)}.\n\n[[ ## answer ## ]]\n{int(a) + int(b)}\n\n[[ ## completed ## ]]"

    s = make_server(responder=dspy_responder)
    result = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["dspy:openai/fake"], api_base=s.base_url,
                                           input_field="question", label_field="answer", samples=2))  # fmt: skip
    record = result.records[0]
    assert record.majority == record.label and record.samples[0].rationale.endswith(f"is {record.label}.")
    assert record.samples[0].teacher == "dspy:openai/fake" and len(s.requests) == 24
    assert "[[ ## reasoning ## ]]" in s.requests[0]["messages"][0]["content"]  # DSPy's ChatAdapter wrote the prompt
    again = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["dspy:openai/fake"], api_base=s.base_url,
                                          input_field="question", label_field="answer", samples=2))  # fmt: skip
    assert len(s.requests) == 24 and again.stats.cached == 24  # our cache, not DSPy's
    assert sorted({b.get("seed") for b in s.requests}) == [0, 1]  # sample k is seeded seed + k: reproducible
    assert record.samples[0].finish_reason == "stop"
    cut = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["dspy:openai/fake"], api_base=s.base_url, limit=2,
                                        input_field="question", label_field="answer", max_tokens=4, cache_dir=None))  # fmt: skip
    sample = cut.records[0].samples[0]
    assert sample.finish_reason == "length" and sample.parse_error.startswith("cut at max_tokens"), sample


def test_plugins_dir_loads_loose_files_and_the_example_plugins(cli):
    code, out, _ = cli("--plugins-dir", ROOT / "plugins", "plugins", "--json")
    assert code == 0
    rows = json.loads(out)
    assert any(r["name"] == "keyword-teacher" and r["origin"].startswith("plugins dir") for r in rows)


def test_trace_env_var_prints_hook_calls():
    env = {**os.environ, "RDISTILL_TRACE_HOOKS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rationale_distill.cli", "plugins"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "[rdistill hook] register_teachers(register)" in proc.stderr


def test_third_party_plugin_package_installed_with_pip(tmp_path):
    pkg = tmp_path / "rdistill-shout"
    (pkg / "rdistill_shout").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "rdistill-shout"
        version = "0.0.1"
        [project.entry-points.rationale_distill]
        shout = "rdistill_shout"
    """))
    (pkg / "rdistill_shout" / "__init__.py").write_text(textwrap.dedent("""
        import rationale_distill as rd

        @rd.hookimpl
        def register_prompts(register):
            register("shout", {"name": "shout", "template": "{input}!"})
    """))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(pkg)]
    subprocess.run(pip, check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("RDISTILL_LOAD_PLUGINS")
    proc = subprocess.run([sys.executable, "-m", "rationale_distill.cli", "plugins", "--json"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    row = next(r for r in json.loads(proc.stdout) if r["name"] == "shout")
    assert row["plugin"] == "shout" and row["origin"] == "entry point (rdistill-shout 0.0.1)"
    env["RDISTILL_LOAD_PLUGINS"] = ""  # pinning: none
    proc = subprocess.run([sys.executable, "-m", "rationale_distill.cli", "plugins", "--json"], env=env, capture_output=True, text=True)
    assert "shout" not in {r["name"] for r in json.loads(proc.stdout)}


def test_data_stages_start_without_heavy_imports():
    code = ("import sys, rationale_distill, rationale_distill.cli; from rationale_distill.plugins import load_plugins; load_plugins(); "
            "print(','.join(m for m in ('torch', 'transformers', 'trl', 'peft', 'litellm', 'datasets') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout
