"""The plugin manager: built-ins, entry points, ``--plugins-dir`` files, registries and tracing.

Environment:
  RDISTILL_LOAD_PLUGINS  comma-separated entry-point plugin names to load (empty: none); unset: all.
  RDISTILL_TRACE_HOOKS   set to 1 to print every hook call (and which plugins answered) to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "rationale_distill"

DEFAULT_PLUGINS = (
    "rationale_distill.default_plugins.loaders",
    "rationale_distill.default_plugins.teachers",
    "rationale_distill.default_plugins.prompts",
    "rationale_distill.default_plugins.parsers",
    "rationale_distill.default_plugins.filters",
    "rationale_distill.default_plugins.trainers",
    "rationale_distill.default_plugins.local_model",
    "rationale_distill.default_plugins.commands",
)

KINDS = ("loaders", "teachers", "prompts", "parsers", "filters", "trainers", "soft_targets", "litellm_providers", "commands")


@dataclass
class Entry:
    name: str
    obj: Any
    plugin: str
    options: dict = field(default_factory=dict)


class Registry:
    """Names -> objects of one kind, remembering which plugin registered each."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Entry] = {}

    def add(self, plugin: str, name: str, obj: Any, **options) -> None:
        if name in self.entries:
            other = self.entries[name].plugin
            raise PluginError(
                f"duplicate {self.kind[:-1]} name {name!r}: registered by both {other!r} and {plugin!r}; "
                f"rename one of them or uninstall/remove one plugin"
            )
        self.entries[name] = Entry(name, obj, plugin, options)

    def get(self, name: str) -> Any:
        try:
            return self.entries[name].obj
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise PluginError(f"unknown {self.kind[:-1]} {name!r} (known: {known})") from None

    def entry(self, name: str) -> Entry:
        self.get(name)  # the same one-line error for an unknown name
        return self.entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries.values())

    def names(self) -> list[str]:
        return sorted(self.entries)


class Plugins:
    """A loaded plugin manager and one registry per kind. Pass it explicitly; no global state."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.registries = {kind: Registry(kind) for kind in KINDS}
        for kind in KINDS:
            self._collect(kind)

    def __getattr__(self, kind: str) -> Registry:
        registries = self.__dict__.get("registries", {})
        if kind in registries:
            return registries[kind]
        raise AttributeError(kind)

    def _collect(self, kind: str) -> None:
        hook_name = f"register_{kind}"
        registry = self.registries[kind]
        # Call the hook once per plugin so every registration knows its source (for collisions and
        # `rdistill plugins`); subset_hook_caller keeps the call visible to hook tracing.
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            others = [p for p in self.pm.get_plugins() if p is not impl.plugin]
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)

            def register(name, obj, *args, _plugin=impl.plugin_name, **options):
                if args:  # register_commands passes (name, configure, run)
                    obj = (obj, *args)
                registry.add(_plugin, name, obj, **options)

            caller(register=register)


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("rationale_distill")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("RDISTILL_TRACE_HOOKS"):

        def before(hook_name, hook_impls, kwargs):
            names = ", ".join(impl.plugin_name for impl in hook_impls)
            print(f"[rdistill hook] {hook_name}({', '.join(kwargs)}) -> {names}", file=sys.stderr)

        pm.add_hookcall_monitoring(before, lambda outcome, hook_name, hook_impls, kwargs: None)
    return pm


def load_module_file(path: Path):
    """Import one loose ``.py`` plugin file under a private module name."""
    module_name = f"rdistill_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"{path}: the plugin failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def load_plugins(plugins_dirs=(), extra: list[Any] = (), entry_points: bool = True) -> Plugins:
    """Built-ins, then entry-point plugins, then loose files from each ``plugins_dirs`` folder, then ``extra``."""
    pm = _plugin_manager()
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)

    if entry_points:
        pinned = os.environ.get("RDISTILL_LOAD_PLUGINS")
        allowed = None if pinned is None else {p.strip() for p in pinned.split(",") if p.strip()}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"entry point {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            pm.register(plugin, name=ep.name)

    for folder in plugins_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise PluginError(f"--plugins-dir {folder}: not a directory")
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            pm.register(load_module_file(path), name=f"{folder.name}/{path.name}")

    for i, plugin in enumerate(extra):
        pm.register(plugin, name=getattr(plugin, "__name__", f"extra-{i}"))

    try:
        pm.check_pending()  # a misspelled hook implementation fails loudly
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}; check the hook name against rdistill's hookspecs") from exc
    return Plugins(pm)


def plugin_origin(plugins: Plugins, plugin_name: str) -> str:
    """Where a plugin came from, for `rdistill plugins`."""
    if plugin_name.startswith("rationale_distill.default_plugins"):
        return "built-in"
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == plugin_name:
            dist = getattr(ep, "dist", None)
            return f"entry point ({dist.name} {dist.version})" if dist else "entry point"
    if "/" in plugin_name and plugin_name.endswith(".py"):
        return f"plugins dir ({plugin_name})"
    return "registered in code"
