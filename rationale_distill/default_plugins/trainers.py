"""Built-in student trainer (TRL SFT on the multi-task objective) and sources of soft targets."""

from ..hookspecs import hookimpl


def trl_sft(config, plugins=None):
    from ..training.sft import train_trl_sft

    return train_trl_sft(config, plugins)


@hookimpl
def register_trainers(register):
    register("trl-sft", trl_sft)


def _source(name):
    def factory(settings):
        from ..training.kd import SOURCES  # torch: imported only when a source is used

        return SOURCES[name](settings)

    factory.__doc__ = f"soft targets from {name} (rationale_distill.training.kd)"
    return factory


@hookimpl
def register_soft_targets(register):
    for name in ("teacher", "teacher-topk", "logprobs", "votes"):
        register(name, _source(name))
