"""Built-in student trainers and sources of soft targets, registered through the public hooks.

- ``trl-sft``: a causal LM with TRL SFT on the multi-task objective, soft targets optional (``training/sft.py``).
- ``encoder-classifier``: an encoder with a classification head, hard or soft labels (``training/classifier.py``).
- ``tfidf-logreg``: TF-IDF + logistic regression, the classical baseline (``training/linear.py``).

A trainer registers ``register(name, train_fn, config=SettingsDataclass, load=load_fn, default_student=...)``:
``config`` holds its own settings (flags of `rdistill train`, ``trainer_options`` in YAML), ``load(folder, device)``
returns what `rdistill eval` asks for answers (without it, the student is loaded as a causal LM).
"""

from ..hookspecs import hookimpl
from ..training.classifier import MINILM, EncoderClassifierConfig
from ..training.linear import TfidfLogRegConfig


def trl_sft(config, plugins=None):
    from ..training.sft import train_trl_sft

    return train_trl_sft(config, plugins)


def encoder_classifier(config, settings=None):
    from ..training.classifier import train_encoder_classifier

    return train_encoder_classifier(config, settings)


def load_encoder(folder, device="cpu"):
    from ..training.classifier import load_encoder

    return load_encoder(folder, device)


def tfidf_logreg(config, settings=None):
    from ..training.linear import train_tfidf_logreg

    return train_tfidf_logreg(config, settings)


def load_linear(folder, device="cpu"):
    from ..training.linear import load_linear

    return load_linear(folder, device)


@hookimpl
def register_trainers(register):
    register("trl-sft", trl_sft, default_student="gemma-3-270m")
    register("encoder-classifier", encoder_classifier, config=EncoderClassifierConfig, load=load_encoder, default_student=MINILM)
    register("tfidf-logreg", tfidf_logreg, config=TfidfLogRegConfig, load=load_linear, default_student="none")


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
