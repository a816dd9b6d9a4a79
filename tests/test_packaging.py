"""What a user gets from `pip install rationale-distill` (a wheel, not this checkout): every module and data file."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_module_prompt_and_demo_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)  # fmt: skip
    wheel = next(tmp_path.glob("rationale_distill-*.whl"))
    inside = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "rationale_distill"
    modules = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules and modules <= inside, f"not in the wheel: {sorted(modules - inside)} (add the package to pyproject.toml)"
    prompts = {f"rationale_distill/prompt_files/{p.name}" for p in (ROOT / "prompts").glob("*.yaml")}
    demo = {p.relative_to(ROOT).as_posix() for p in (package / "demo").iterdir() if p.suffix in (".jsonl", ".yaml")}
    assert prompts and prompts <= inside and demo and demo <= inside, sorted((prompts | demo) - inside)
