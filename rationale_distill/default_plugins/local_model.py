"""Built-in LiteLLM provider ``local``: Hugging Face models on this machine, batched (``local/gemma-3-270m``)."""

from ..hookspecs import hookimpl


def local_provider():
    from ..generation.local_engine import make_provider

    return make_provider()


@hookimpl
def register_litellm_providers(register):
    register("local", local_provider)
