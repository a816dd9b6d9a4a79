"""Built-in rationale parsers: answer marker, JSON object, DSPy fields."""

from ..hookspecs import hookimpl
from ..parsing import answer_marker, dspy_fields, json_object


@hookimpl
def register_parsers(register):
    register("answer-marker", answer_marker)
    register("json", json_object)
    register("dspy", dspy_fields)
