"""Every hook a plugin can implement, grouped by pipeline stage.

Each hook receives a ``register`` callback and calls it as often as it likes; the host owns names and
collisions (a duplicate name is an error naming both plugins). Hooks are called with keyword arguments
only, so an implementation may accept fewer arguments than the spec and specs can grow additively.
"""

import pluggy

hookspec = pluggy.HookspecMarker("rationale_distill")
hookimpl = pluggy.HookimplMarker("rationale_distill")


# --- stage 0: input ---------------------------------------------------------------------------------


@hookspec
def register_loaders(register):
    """Register dataset loaders: ``register(name, loader, extensions=(".jsonl",))``.

    A loader is ``loader(path) -> Iterator[tuple[int, dict]]`` yielding (1-based line/row number, row)."""


# --- stage 1: teachers and prompts ------------------------------------------------------------------


@hookspec
def register_teachers(register):
    """Register teacher factories: ``register(name, factory)``.

    ``factory(model=None, **options) -> Teacher``. ``--teacher NAME`` or ``--teacher NAME:MODEL`` picks one;
    a bare LiteLLM model string (``openai/gpt-4o-mini``) goes to the built-in ``litellm`` teacher."""


@hookspec
def register_prompts(register):
    """Register prompt strategies: ``register(name, path_or_dict)`` (a YAML file path or its parsed dict)."""


@hookspec
def register_parsers(register):
    """Register rationale parsers: ``register(name, parser)`` with ``parser(text, spec) -> Parsed``."""


@hookspec
def register_litellm_providers(register):
    """Register LiteLLM custom providers: ``register(provider, handler_factory)``.

    ``handler_factory()`` returns a ``litellm.CustomLLM`` instance (called lazily, when a run starts); models ``provider/...`` are then routed to it, so a
    teacher that is not an HTTP API still goes through LiteLLM (and our cache, limits and records)."""


# --- stage 2: dataset builder -----------------------------------------------------------------------


@hookspec
def register_filters(register):
    """Register record filters: ``register(name, filter_factory)``.

    ``filter_factory(**options)`` returns ``f(candidate, context) -> str | None`` (None keeps the candidate,
    a string is the reason it was dropped). The options are the build's settings (``min_chars``, ``max_chars``,
    ``near``, ``grounding``, ``judge_model``, ``judge_api_base``), ``records`` (all of them, for a filter that
    prepares work up front), ``build_config`` and ``before`` (the ``(name, f)`` filters that run first); take
    ``**_`` for the rest. A returned ``f`` with a ``summary`` dict attribute has it written to the dataset card."""


# --- stage 3: students ------------------------------------------------------------------------------


@hookspec
def register_trainers(register):
    """Register student trainers: ``register(name, train_fn)`` with ``train_fn(config) -> output_dir`` (a ``plugins``
    keyword, when ``train_fn`` takes one, gets the loaded plugins)."""


@hookspec
def register_soft_targets(register):
    """Register sources of soft targets for ``--objective kd``: ``register(name, factory)``, ``factory(settings)``
    returning a ``training.kd.SoftTargets`` (see that class for the calls the trainer makes)."""


# --- the command line -------------------------------------------------------------------------------


@hookspec
def register_commands(register):
    """Register CLI sub-commands: ``register(name, configure, run, help="...")``.

    ``configure(parser)`` adds arguments to an ``argparse`` sub-parser; ``run(args, plugins) -> int``."""
