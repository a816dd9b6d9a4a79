"""``--trainer tfidf-logreg``: the classical baseline every classification report should show. TF-IDF over word
n-grams, then multinomial logistic regression (scikit-learn), trained in seconds on a CPU.

Soft labels (``--objective kd --kd-source votes|logprobs``) go in through sample weights: each example becomes one
row per class it has mass on, weighted by its mixed target ``alpha * one-hot + (1 - alpha) * soft_T``. The weighted
log-loss of those rows is exactly the cross-entropy against the soft target, which is what the multinomial model
minimises (plus its L2 penalty, ``C``). The model is saved with joblib beside a manifest that holds its SHA-256;
loading re-checks the hash before unpickling, so only the file this engine wrote is ever loaded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import option, to_dict
from ..errors import UsageError

MODEL_FILE = "model.joblib"


@dataclass
class TfidfLogRegConfig:
    tfidf_ngrams: int = option(2, help="tfidf-logreg: word n-grams from 1 up to this length", ge=1, le=5)
    tfidf_max_features: int = option(50000, help="tfidf-logreg: keep the most frequent n-grams, at most this many", ge=1)
    tfidf_min_df: int = option(1, help="tfidf-logreg: ignore n-grams seen in fewer training inputs than this", ge=1)
    logreg_c: float = option(10.0, help="tfidf-logreg: inverse L2 strength of the logistic regression (larger fits the targets more closely)", gt=0)
    logreg_max_iter: int = option(2000, help="tfidf-logreg: L-BFGS iterations at most", ge=1)


def train_tfidf_logreg(config, settings: TfidfLogRegConfig | None = None) -> Path:
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from . import begin_output, finish_output, fingerprint, model_card
    from .labels import ignored, mixed_target, read_class_data, soft_source

    settings = settings or TfidfLogRegConfig()
    ignored(config, ("lora", "qlora", "merge_adapter", "student_keep_every", "resume"))
    started = time.perf_counter()
    data = read_class_data(config.data, soft_source(config), config.kd_temperature)
    classes, train = data.classes, data.splits["train"]
    index = {c: i for i, c in enumerate(classes)}
    vectorizer = TfidfVectorizer(ngram_range=(1, settings.tfidf_ngrams), max_features=settings.tfidf_max_features,
                                 min_df=settings.tfidf_min_df, sublinear_tf=True)  # fmt: skip
    features = vectorizer.fit_transform([e.input for e in train])
    rows, targets, weights = [], [], []  # one row per (example, class with mass): the soft cross-entropy as weights
    for i, e in enumerate(train):
        for c, w in enumerate(mixed_target(index[e.label], e.soft, config.kd_alpha, len(classes))):
            if w > 0:
                rows.append(i)
                targets.append(c)
                weights.append(w)
    model = LogisticRegression(C=settings.logreg_c, max_iter=settings.logreg_max_iter, random_state=config.seed)
    model.fit(features[rows], np.array(targets), sample_weight=np.array(weights))
    probs = full_probs(model, features, len(classes))
    loss = float(-(np.array(weights) * np.log(np.clip(probs[rows, targets], 1e-12, None))).sum() / len(train))  # per example
    history = [{"epoch": 1.0, "loss": round(loss, 6)}]
    if data.splits.get("validation"):
        val = data.splits["validation"]
        predicted = full_probs(model, vectorizer.transform([e.input for e in val]), len(classes)).argmax(axis=1)
        history.append({"epoch": 1.0, "eval_accuracy": float(np.mean([classes[p] == e.label for p, e in zip(predicted, val)]))})
    runtime = time.perf_counter() - started

    import joblib
    import sklearn

    out = Path(config.out)
    begin_output(out)
    tmp = out / f".{MODEL_FILE}.tmp"
    joblib.dump({"vectorizer": vectorizer, "model": model, "classes": classes}, tmp)
    tmp.replace(out / MODEL_FILE)
    (out / "labels.json").write_text(json.dumps({"id2label": dict(enumerate(classes))}, indent=2) + "\n")
    parameters = int(model.coef_.size + model.intercept_.size)
    meta = {"config": to_dict(config), "trainer_settings": to_dict(settings), "student_kind": "classifier",
            "student_base": "TF-IDF + logistic regression", "dataset": data.report, "classes": classes,
            "data": data.summary(), "log_history": history, "parameters": parameters, "trainable_parameters": parameters,
            "vocabulary": len(vectorizer.vocabulary_), "device": "cpu", "bf16": False, "train_runtime_s": runtime,
            "learning_rate": None, "fingerprint": fingerprint(config), "versions": {"scikit-learn": sklearn.__version__, "joblib": joblib.__version__}}  # fmt: skip
    (out / "README.md").write_text(model_card(meta))
    finish_output(out, meta)
    return out


def full_probs(model, features, n_classes: int):
    """(rows, n_classes) probabilities over every class, also those no training row was weighted towards."""
    import numpy as np

    probs = np.zeros((features.shape[0], n_classes))
    probs[:, model.classes_] = model.predict_proba(features)
    return probs


class LinearStudent:
    """A saved tfidf-logreg student, for evaluation: ``predict(inputs, batch_size) -> (classes, seconds per input)``."""

    reads = "input"  # the bare input, not the LM student's prefixed prompt

    def __init__(self, folder: str | Path):
        import joblib

        from . import read_student

        read_student(folder, verify=True)  # the pickle's hash is the one training wrote, before it is unpickled
        saved = joblib.load(Path(folder) / MODEL_FILE)
        self.vectorizer, self.model, self.classes = saved["vectorizer"], saved["model"], saved["classes"]
        self.parameters = int(self.model.coef_.size + self.model.intercept_.size)

    def probabilities(self, inputs: list[str]):
        return full_probs(self.model, self.vectorizer.transform(inputs), len(self.classes))

    def predict(self, inputs: list[str], batch_size: int = 64) -> tuple[list[str], list[float]]:
        answers, latencies = [], []
        for i in range(0, len(inputs), batch_size):
            batch = inputs[i : i + batch_size]
            started = time.perf_counter()
            best = self.probabilities(batch).argmax(axis=1)
            elapsed = time.perf_counter() - started
            answers += [self.classes[b] for b in best]
            latencies += [elapsed / len(batch)] * len(batch)
        return answers, latencies

    def tokens(self, text: str) -> int:
        return len(self.vectorizer.build_analyzer()(text))


def load_linear(folder: str | Path, device: str = "cpu") -> LinearStudent:
    if not (Path(folder) / MODEL_FILE).is_file():
        raise UsageError(f"{folder}: no {MODEL_FILE}; not a tfidf-logreg student")
    return LinearStudent(folder)
