"""Built-in prompt strategies: every YAML file shipped in ``prompts/`` (packaged as rationale_distill.prompt_files)."""

from importlib import resources

from ..hookspecs import hookimpl


@hookimpl
def register_prompts(register):
    for entry in sorted(resources.files("rationale_distill.prompt_files").iterdir(), key=lambda p: p.name):
        if entry.name.endswith((".yaml", ".yml")):
            register(entry.name.rsplit(".", 1)[0], str(entry))
