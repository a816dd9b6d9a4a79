"""Built-in student trainer: TRL SFT on the multi-task objective (imports torch only when training starts)."""

from ..hookspecs import hookimpl


def trl_sft(config):
    from ..trl_trainer import train_trl_sft

    return train_trl_sft(config)


@hookimpl
def register_trainers(register):
    register("trl-sft", trl_sft)
