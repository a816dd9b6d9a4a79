"""The package's shape: stages in order (generation -> data -> training -> evaluation), each importing only from the
stages before it and from the shared nouns; the data stages never import torch at module level."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rationale_distill"
SHARED = {"config", "errors", "records", "hookspecs", "plugins", "student"}  # the nouns and contracts every stage uses
STAGES = ["generation", "data", "training", "evaluation"]  # in pipeline order
WIRING = {"__init__", "cli", "pipeline", "default_plugins", "testing", "demo"}  # they call every stage: not checked


def imports(path: Path) -> set[str]:
    """Every rationale_distill module this file imports (lazy ones in functions too), as absolute dotted names."""
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = here[:-1]  # a module's package, or for __init__.py the package itself
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("rationale_distill"):
                target = node.module.split(".")
            else:
                continue
            found |= {".".join([*target, a.name]) for a in node.names} if not node.module else {".".join(target)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rationale_distill")}
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")[1:]
    return parts[0] if parts else "__init__"


def test_each_stage_imports_only_shared_modules_and_the_stages_before_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = layer(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if own in WIRING or own == "prompt_files":
            continue
        allowed = set(SHARED) if own in SHARED else set(SHARED) | set(STAGES[: STAGES.index(own) + 1])
        for target in imports(path):
            if layer(target) not in allowed | {"__init__"} or (own in SHARED and layer(target) == "__init__"):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_stage_folders_hold_the_stage_modules():
    assert {p.name for p in PACKAGE.iterdir() if p.suffix == ".py"} == {f"{m}.py" for m in SHARED | {"__init__", "cli", "pipeline"}}
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").is_file()
