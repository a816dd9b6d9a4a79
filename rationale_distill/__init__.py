"""rationale-distill: turn an expensive LLM into a small, fast, task-specific student.

    import rationale_distill as rd
    result = rd.generate(rd.GenerateConfig(data="problems.jsonl", teachers=["openai/gpt-4o-mini"], ...))
"""

import os

# LiteLLM fetches a price list on import unless told to use its bundled copy; the hub pings home unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from .data.dataset import BuildConfig, build  # noqa: E402
from .errors import RdistillError, UsageError  # noqa: E402
from .evaluation.evaluate import EvalConfig, evaluate  # noqa: E402
from .generation.generate import GenerateConfig, generate  # noqa: E402
from .generation.teachers import Choice, Completion, Request, Teacher  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .pipeline import RunConfig, load_run_config, run_pipeline  # noqa: E402
from .plugins import load_plugins  # noqa: E402
from .records import Part, Sample, TeacherRecord, read_records  # noqa: E402
from .training import TrainConfig, train  # noqa: E402

__all__ = [
    "BuildConfig", "Choice", "Completion", "EvalConfig", "GenerateConfig", "Part", "RdistillError", "Request",
    "RunConfig", "Sample", "Teacher", "TeacherRecord", "TrainConfig", "UsageError", "build", "evaluate", "generate",
    "hookimpl", "load_plugins", "load_run_config", "read_records", "run_pipeline", "train",
]  # fmt: skip
__version__ = "0.1.0"
