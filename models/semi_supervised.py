"""M2, the semi-supervised VAE of Kingma, Rezende, Mohamed & Welling (2014).

Generative story, per datapoint n (C classes):

    y_n ~ Categorical(1/C, ..., 1/C),   z_n ~ N(0, I),   x_n ~ p(x | decoder([z_n, onehot y_n]))

Guide: q(y_n | x_n) = Categorical(softmax(classifier(x_n))) (the classifier), then
z_n ~ q(z | x_n, y_n), a guide family on an encoder of [x_n, onehot(y_n)].

Labels: a batch is ``(x, labels)`` with ``labels[n] = -1`` where the label is missing (or
just ``x``: nothing labelled). For a labelled point the guide's q(y | x) is replaced by the
point mass on its label, so its term of the ELBO is exactly Kingma et al.'s

    L(x, y) = E_q(z|x,y)[log p(x | y, z) + log p(y) + log p(z) - log q(z | x, y)],

and for an unlabelled point it is U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)) (exactly, under
enumeration). Every datapoint shares one ``"data"`` plate, so minibatches may mix both.

Auxiliary classification term (Kingma et al.'s J^alpha = J + alpha_K E_labelled[-log q(y|x)]
with alpha_K = alpha N): while the module is in training mode, every labelled point adds
``w * log q(y_n | x_n)`` inside the ``"data"`` plate, w = alpha N / n_l (N: the training-set
size, ``num_data``; n_l: the number of labelled training points, ``num_labelled``), or
w = ``aux_weight`` when given. Pyro's ``examples/vae/ss_vae_M2.py`` calls w its
``aux_loss_multiplier`` (46 there, with n_l = 100 of N = 50,000: alpha = 0.092). The plate
scales a minibatch by N/B, so the term is an unbiased estimate of alpha_K times the mean over
the labelled points, whichever batches they fall in. It is a training term only: in
evaluation mode (``model.eval()``, which :func:`~pyro_vae.inference.evaluate` sets) it is
absent and every reported number is the ELBO or log-likelihood of the generative model.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method

from pyro_vae.models import registry
from pyro_vae.models._validation import check_positive_int
from pyro_vae.models.class_site import (
    BaselineNetwork,
    ClassSiteModel,
    check_labels,
    concat_broadcast,
    one_hot_table,
    pin_to_labels,
)
from pyro_vae.models.networks import MLP, MLPDecoder, MLPEncoder
from pyro_vae.models.vae import DataCheckedModel, data_plate


class SemiSupervisedVAE(ClassSiteModel, DataCheckedModel, PyroModule):
    """M2: p(y) p(z) p(x | y, z) with classifier q(y | x) and q(z | x, y).

    ``alpha`` (with ``num_labelled``, the number of labelled training points) or
    ``aux_weight`` (the weight per labelled point, Pyro's ``aux_loss_multiplier``) weighs the
    auxiliary classification term (see the module docstring; 0 turns it off).
    ``likelihood`` and ``guide`` (q(z | x, y)) are registered names or modules.
    The model's code (for figures) is [z, onehot(y)], of size ``z_dim + num_classes``.
    """

    #: class c of the model is label c (labels supervise it): accuracy needs no matching
    labels_identified = True
    discrete_sites = ("y",)

    def __init__(self, x_dim: int, num_classes: int = 10, z_dim: int = 8, *,
                 likelihood="bernoulli", guide="diagonal", hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", alpha: float = 0.1,
                 num_labelled: int | None = None, aux_weight: float | None = None,
                 likelihood_options: dict | None = None, guide_options: dict | None = None,
                 baseline_hidden: Sequence[int] = (64,), labelled_per_batch: int = 0,
                 balance_labelled: bool = False):
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if not (isinstance(alpha, (int, float)) and alpha >= 0):
            raise ValueError(f"alpha (the weight of the auxiliary classification term) must be "
                             f">= 0; got {alpha!r}. Kingma et al. use alpha=0.1; 0 turns it off.")
        self.alpha = float(alpha)
        if num_labelled is not None:
            num_labelled = check_positive_int(num_labelled, "num_labelled")
        if aux_weight is not None and not (isinstance(aux_weight, (int, float))
                                           and aux_weight >= 0):
            raise ValueError(f"aux_weight (the weight of each labelled point's log q(y|x)) "
                             f"must be >= 0; got {aux_weight!r}. Pyro's ss_vae_M2 uses 46.")
        self.num_labelled = num_labelled
        self.aux_weight = None if aux_weight is None else float(aux_weight)
        if isinstance(labelled_per_batch, bool) or not isinstance(labelled_per_batch, int) \
                or labelled_per_batch < 0:
            raise ValueError(f"labelled_per_batch must be a non-negative integer (0: labelled "
                             f"points mixed into the batches); got {labelled_per_batch!r}")
        if labelled_per_batch and num_labelled is None:
            raise ValueError("labelled_per_batch scales the labelled rows by n_l / "
                             "labelled_per_batch: give num_labelled=n_l as well")
        self.labelled_per_batch = labelled_per_batch
        if balance_labelled and not labelled_per_batch:
            raise ValueError("balance_labelled weighs the labelled rows of stratified batches; "
                             "give labelled_per_batch > 0 as well")
        self.balance_labelled = bool(balance_labelled)
        hidden = [check_positive_int(h, "hidden layer width") for h in hidden]
        self.classifier = MLP(x_dim, hidden, num_classes, activation)
        encoder = MLPEncoder(x_dim + num_classes, hidden, activation)
        self.decoder = MLPDecoder(z_dim + num_classes, x_dim, hidden, activation)
        self.guide_family = registry.build("guide", guide, guide_options, encoder=encoder,
                                           z_dim=z_dim)
        self.likelihood = registry.build("likelihood", likelihood, likelihood_options,
                                         x_dim=x_dim)
        self.baseline_network = BaselineNetwork(x_dim, self.discrete_sites, baseline_hidden)
        named = isinstance(likelihood, str) and isinstance(guide, str)
        self.config = None if not named else {
            "class": "SemiSupervisedVAE", "x_dim": x_dim, "num_classes": num_classes,
            "z_dim": z_dim, "likelihood": likelihood, "guide": guide, "hidden": list(hidden),
            "activation": activation, "alpha": self.alpha, "num_labelled": num_labelled,
            "aux_weight": self.aux_weight, "labelled_per_batch": labelled_per_batch,
            "balance_labelled": self.balance_labelled,
            "likelihood_options": dict(likelihood_options or {}),
            "guide_options": dict(guide_options or {}),
            "baseline_hidden": list(baseline_hidden)}

    # ---- the Pyro model and guide ---------------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, labels: torch.Tensor | None = None,
              num_data: int | None = None) -> None:
        labels = check_labels(labels, len(x), self.num_classes, x.device)
        if self._stratified(labels):
            self._stratified_model(x, labels, num_data)
            return
        with data_plate(x, num_data):
            self._generate(x)
            if self.training and labels is not None:
                labelled = labels >= 0
                weight = self.labelled_weight(len(x) if num_data is None else num_data)
                if weight > 0 and bool(labelled.any()):
                    log_q = self._log_q_of_labels(x, labels.clamp(min=0))
                    pyro.factor("classification", weight * log_q * labelled.to(x.dtype))

    def _generate(self, x: torch.Tensor, y: torch.Tensor | None = None, suffix: str = ""):
        """y ~ p(y) (observed when given, one-hot), z ~ N(0, I), x ~ p(x | y, z), at sites
        ``"y"``, ``"z"``, ``"x"`` with ``suffix``, in whatever plate encloses the call."""
        y = pyro.sample("y" + suffix,
                        dist.OneHotCategorical(logits=x.new_zeros(self.num_classes)), obs=y)
        z = pyro.sample("z" + suffix, dist.Normal(x.new_zeros(self.z_dim),
                                                  x.new_ones(self.z_dim)).to_event(1))
        self.likelihood(self.decoder(concat_broadcast(z, y)), x, name="x" + suffix)

    def _log_q_of_labels(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log q(y = labels | x) per row, from the classifier."""
        return torch.log_softmax(self.classifier(x), -1).gather(
            -1, labels.unsqueeze(-1)).squeeze(-1)

    @pyro_method
    def guide(self, x: torch.Tensor, labels: torch.Tensor | None = None,
              num_data: int | None = None) -> None:
        labels = check_labels(labels, len(x), self.num_classes, x.device)
        if self._stratified(labels):
            labelled = labels >= 0
            if not bool(labelled.all()):
                with data_plate(x[~labelled], self._unlabelled_count(num_data)):
                    self._guide_rows(x[~labelled], None)
            with self._labelled_plate(int(labelled.sum()), num_data):
                self.guide_family(concat_broadcast(
                    x[labelled], self._one_hot(labels[labelled], x)), name="z_labelled")
            return
        with data_plate(x, num_data):
            self._guide_rows(x, labels)

    def _guide_rows(self, x: torch.Tensor, labels: torch.Tensor | None) -> None:
        """q(y | x) (pinned to the labels where given) and q(z | x, y), in the data plate."""
        logits = pin_to_labels(self.classifier(x), labels)
        y = pyro.sample("y", dist.OneHotCategorical(logits=logits))
        self.guide_family(concat_broadcast(x, y))

    # ---- stratified batches: labelled rows in every batch ---------------------------------
    def _stratified(self, labels: torch.Tensor | None) -> bool:
        """Whether this call trains on a stratified batch (see ``labelled_per_batch``)."""
        if not (self.training and self.labelled_per_batch and labels is not None):
            return False
        count = int((labels >= 0).sum())
        if count != self.labelled_per_batch:
            raise ValueError(
                f"the model was built with labelled_per_batch={self.labelled_per_batch} "
                f"(labelled rows scaled by n_l / {self.labelled_per_batch}), but this training "
                f"batch holds {count} labelled rows. Fit it on "
                "LabelledInEveryBatch(data, per_batch=labelled_per_batch), or build it with "
                "labelled_per_batch=0 to mix the labelled points into the batches.")
        return True

    def _labelled_plate(self, size: int, num_data: int | None) -> pyro.plate:
        """The ``"labelled"`` plate over ``size`` rows: scale n_l / size when ``num_data`` is
        given (a training step), n_u / size with ``balance_labelled``, none without
        ``num_data`` (as ``data_plate``)."""
        if num_data is None:
            return pyro.plate("labelled", size)
        full = self._unlabelled_count(num_data) if self.balance_labelled else self.num_labelled
        return pyro.plate("labelled", full, subsample_size=size,
                          subsample=torch.arange(size, device=self._reference().device))

    def _unlabelled_count(self, num_data: int | None) -> int | None:
        return None if num_data is None else num_data - self.num_labelled

    def _one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return one_hot_table(self.num_classes, like)[labels]

    def _stratified_model(self, x: torch.Tensor, labels: torch.Tensor,
                          num_data: int | None) -> None:
        """The same objective as :meth:`model`, estimated from a stratified batch: the rows
        without a label in the ``"data"`` plate (n_u = N - n_l of them, scale n_u / B_u), the
        labelled rows in a ``"labelled"`` plate (scale n_l / B_l) with y observed there, so
        L(x, y) and the auxiliary term w log q(y | x) are summed exactly as before. Without
        ``num_data`` both plates are unscaled, as :func:`data_plate` is. ``balance_labelled``
        changes the objective on purpose: the labelled rows weigh n_u / n_l times more
        (scale n_u / B_l), sum_u U + (n_u / n_l) sum_l [L + w log q], as implementations
        that average a labelled and an unlabelled batch per step do."""
        labelled = labels >= 0
        if not bool(labelled.all()):
            rows = x[~labelled]
            with data_plate(rows, self._unlabelled_count(num_data)):
                self._generate(rows)
        rows, classes = x[labelled], labels[labelled]
        with self._labelled_plate(len(rows), num_data):
            self._generate(rows, self._one_hot(classes, x), suffix="_labelled")
            weight = self.labelled_weight(len(x) if num_data is None else num_data)
            if weight > 0:
                pyro.factor("classification", weight * self._log_q_of_labels(rows, classes))

    def labelled_weight(self, num_data: int) -> float:
        """w, the weight of each labelled point's log q(y | x) in the training objective:
        ``aux_weight``, or alpha N / n_l."""
        if self.aux_weight is not None:
            return self.aux_weight
        if self.alpha == 0:
            return 0.0
        if self.num_labelled is None:
            raise ValueError(
                "the auxiliary term alpha * N * mean log q(y|x) over the labelled points needs "
                "their number: build SemiSupervisedVAE(..., num_labelled=n) with n the number "
                "of labelled training points, or give the weight per labelled point as "
                "aux_weight=... (Pyro's aux_loss_multiplier), or alpha=0 to train without it")
        return self.alpha * num_data / self.num_labelled

    # ---- checks, groups and conveniences --------------------------------------------------
    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y | x), shape (N,)."""
        return self.classifier(x).argmax(-1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code [E_q[z | x], q(y | x)] with E_q[z|x] = sum_y q(y|x) E_q[z|x,y];
        shape (N, z_dim + C)."""
        probs = self.y_posterior(x)
        table = one_hot_table(self.num_classes, x).unsqueeze(-2)
        means = self.guide_family.mean(concat_broadcast(x, table))          # (C, N, z)
        return torch.cat([(probs.T.unsqueeze(-1) * means).sum(0), probs], -1)

    @torch.no_grad()
    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """E[x | z, y] for codes [z, y] of shape (..., z_dim + C) (a soft y mixes classes in
        the decoder's input)."""
        return self.likelihood.mean(self.decoder(code))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def _labels(self, n: int, c) -> torch.Tensor:
        device = self._reference().device
        if c is None:
            return torch.randint(self.num_classes, (n,), device=device)
        labels = torch.as_tensor(c, device=device).long()
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(f"class c must lie in 0..{self.num_classes - 1}; got {c!r}")
        return labels.expand(n) if labels.dim() == 0 else labels

    @torch.no_grad()
    def sample_latent(self, n: int, c=None) -> torch.Tensor:
        """n codes [z, onehot y] with z ~ N(0, I) and y ~ p(y) (or y = c)."""
        n = check_positive_int(n, "n")
        reference = self._reference()
        y = one_hot_table(self.num_classes, reference)[self._labels(n, c)]
        z = torch.randn(n, self.z_dim, dtype=reference.dtype, device=reference.device)
        return torch.cat([z, y], -1)

    @torch.no_grad()
    def sample_observations(self, code: torch.Tensor) -> torch.Tensor:
        """One draw x ~ p(x | z, y) per code."""
        return self.likelihood.distribution(self.decoder(code)).sample()

    @torch.no_grad()
    def sample(self, n: int, c=None) -> torch.Tensor:
        """E[x | z, y] for n draws z ~ N(0, I), y ~ p(y) (or class ``c``), shape (n, x_dim)."""
        return self.decode(self.sample_latent(n, c))
