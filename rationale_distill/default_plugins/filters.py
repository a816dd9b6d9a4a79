"""Built-in dataset filters: parsed, agrees, rationale-length, dedup, leak."""

from ..data.filters import BUILTIN
from ..hookspecs import hookimpl


@hookimpl
def register_filters(register):
    for name, factory in BUILTIN.items():
        register(name, factory)
