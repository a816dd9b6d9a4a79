"""Built-in teachers: any LiteLLM model string, and a DSPy ChainOfThought program on LiteLLM."""

from ..hookspecs import hookimpl


def litellm_teacher(model=None, **options):
    from ..generation.teachers import LiteLLMTeacher

    return LiteLLMTeacher(model, **options)


def dspy_teacher(model=None, **options):
    from ..generation.dspy_teacher import DSPyTeacher

    return DSPyTeacher(model, **options)


@hookimpl
def register_teachers(register):
    register("litellm", litellm_teacher)
    register("dspy", dspy_teacher)
