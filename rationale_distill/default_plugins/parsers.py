"""Built-in rationale parsers: answer marker, first word, JSON object, DSPy fields."""

from ..generation.parsing import answer_marker, dspy_fields, first_word, json_object
from ..hookspecs import hookimpl


@hookimpl
def register_parsers(register):
    register("answer-marker", answer_marker)
    register("json", json_object)
    register("dspy", dspy_fields)
    register("first-word", first_word)
