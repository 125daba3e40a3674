"""Per-epoch accuracy of a model with a class site ``y`` (M2, the mixture VAE), and the model
of the best validation accuracy kept beside the run.

:class:`ClassAccuracyTracker` is a fit callback: at the end of every epoch it adds the
accuracy of argmax q(y | x) on the validation and test splits (``val_accuracy``,
``test_accuracy``; clustering accuracy for a model whose classes are not the labels) to the
epoch's record, which ``history.csv`` keeps, and whenever the validation accuracy improves it
saves the model to ``RUN/best_model.pt`` (``best_epoch`` in every record). Its state (the best
epoch and accuracy) goes into the checkpoint, so a resumed run keeps the best model it had.
"""

from __future__ import annotations

import math
from pathlib import Path

from pyro_vae.data import Dataset
from pyro_vae.inference.metrics.classes import label_accuracy
from pyro_vae.io import save_model

BEST_MODEL_FILE = "best_model.pt"


class ClassAccuracyTracker:
    """The callback described in the module docstring, for ``model`` on ``dataset``'s
    labelled validation and test splits, saving into the run directory ``path`` (when
    ``saves``: in a distributed run every rank tracks, rank 0 writes)."""

    def __init__(self, model, dataset: Dataset, path: str | Path, *, saves: bool = True):
        self.model, self.path, self.saves = model, Path(path), saves
        self.splits = {prefix: (dataset.split(name), labels)
                       for prefix, name in (("val_", "validation"), ("test_", "test"))
                       if getattr(dataset, name) is not None
                       and (labels := dataset.labels(name)) is not None}
        self.best_accuracy, self.best_epoch = -math.inf, None

    @staticmethod
    def applies(model, dataset: Dataset) -> bool:
        """Whether the model has a class site ``y`` and the dataset labelled test data."""
        return "y" in getattr(model, "discrete_sites", ()) and dataset.test_labels is not None

    def __call__(self, record: dict) -> None:
        was_training = self.model.training
        device = next(self.model.parameters()).device
        self.model.eval()
        try:
            for prefix, (data, labels) in self.splits.items():
                if data.device != device:   # once: fit moves the model before its first epoch
                    data = data.to(device)
                    self.splits[prefix] = (data, labels)
                record[f"{prefix}accuracy"] = label_accuracy(self.model, data, labels).accuracy
        finally:
            self.model.train(was_training)
        accuracy = record.get("val_accuracy")
        if accuracy is not None and accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, record["epoch"]
            if self.saves:
                save_model(self.model, self.path / BEST_MODEL_FILE)
        record["best_epoch"] = self.best_epoch

    def best(self, history: list[dict]) -> dict | None:
        """The record of the best validation epoch, as a summary, or None."""
        if self.best_epoch is None:
            return None
        row = next(r for r in history if r["epoch"] == self.best_epoch)
        return {"epoch": self.best_epoch, "validation_accuracy": row.get("val_accuracy"),
                "test_accuracy": row.get("test_accuracy"), "model": BEST_MODEL_FILE}

    def state_dict(self) -> dict:
        return {"best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best_accuracy, self.best_epoch = state["best_accuracy"], state["best_epoch"]
