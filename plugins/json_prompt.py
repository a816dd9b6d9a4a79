"""Example prompt plugin: a prompt strategy defined in code, answered as a JSON object.

Prompts are data; a plugin can ship YAML files (register a path) or build the dict in code as here.
Use it as `--prompt json-cot` after `--plugins-dir plugins`.
"""

import rationale_distill as rd


@rd.hookimpl
def register_prompts(register):
    register(
        "json-cot",
        {
            "name": "json-cot",
            "system": "You are a careful problem solver.",
            "instructions": 'Reply with one JSON object: {"rationale": "<your reasoning>", "answer": "<the final answer>"}.',
            "template": "{input}",
            "parser": "json",
            "answer_type": "text",
        },
    )
