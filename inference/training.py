"""Fitting by stochastic variational inference: ``elbo.loss_and_grads`` + a torch optimizer.

One path serves every estimator (RenyiELBO and TraceGraph_ELBO have no
``differentiable_loss``): per step, gradients of the estimator's surrogate are accumulated
by Pyro, optionally clipped, and applied by a plain ``torch.optim`` optimizer over the
module's parameters.

Minibatches are scaled to the full data: a model whose ``model``/``guide`` accept a
``num_data`` keyword receives the training-set size and scales its ``"data"`` plate by N/B,
so the loss is an unbiased estimate of the full-data objective; reported losses are divided
by N (per datapoint, nats). A model without ``num_data`` is run unscaled and its batch loss
is divided by B instead (the same per-datapoint number when all latents are local).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.inference.batching import as_source, first_tensor
from pyro_vae.inference.estimators import make_estimator, parse_estimator
from pyro_vae.inference.evaluation import elbo_terms, guess_max_plate_nesting
from pyro_vae.models.handlers import scale_latent_sites

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """'auto' -> CUDA when available else CPU; a CUDA request without CUDA is an error."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}"
                         ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was requested but CUDA is not available "
                           "on this machine; use device='cpu' or device='auto'.")
    return device


def accepts_num_data(model) -> bool:
    """Whether ``model.model`` takes a ``num_data`` keyword (for minibatch scaling)."""
    try:
        params = inspect.signature(model.model).parameters
    except (TypeError, ValueError):
        return False
    return "num_data" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def make_optimizer(optimizer, parameters, lr: float) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(parameters)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}"
                         " or a callable params -> torch.optim.Optimizer")
    return OPTIMIZERS[optimizer](parameters, lr=lr)


def beta_schedule(beta: float, warmup_steps: int, step: int) -> float:
    """Linear KL warm-up: beta * min(1, (step + 1) / warmup_steps)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


def _check_fit_arguments(epochs, batch_size, lr, n, beta, beta_warmup_epochs, clip_norm,
                         max_seconds):
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer; got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} training datapoints; use "
                         f"batch_size <= {n}.")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    if not (isinstance(beta, (int, float)) and beta >= 0):
        raise ValueError(f"beta must be a number >= 0; got {beta!r}")
    if beta_warmup_epochs < 0:
        raise ValueError(f"beta_warmup_epochs must be >= 0; got {beta_warmup_epochs!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None; got {clip_norm!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None; got {max_seconds!r}")


@dataclass
class FitResult:
    """What a fit did: one record per epoch and the settings it ran with."""

    history: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    def column(self, key: str) -> list[float]:
        return [record.get(key, float("nan")) for record in self.history]


def fit(model, data, *, estimator="elbo", epochs: int = 10, batch_size: int | None = None,
        lr: float = 1e-3, optimizer="adam", seed: int | None = 0, device="cpu",
        beta: float = 1.0, beta_warmup_epochs: float = 0, clip_norm: float | None = None,
        validation_data=None, monitor_size: int = 1000, vectorize_particles: bool = True,
        max_seconds: float | None = None, quiet: bool = False,
        callbacks: Sequence[Callable[[dict], None]] = ()) -> FitResult:
    """Fit ``model`` (anything with Pyro ``model``/``guide`` methods and torch parameters).

    ``data`` is a tensor (N, features), a tuple of tensors (model(*batch)) or a batch source;
    ``batch_size`` defaults to min(128, N).
    ``estimator`` is a spec (``'elbo'``, ``'meanfield'``, ``'iwae:k=5'``,
    ``'renyi:alpha=0.5,k=5'``) or a Pyro ELBO. ``beta`` multiplies the latent sites' log-
    densities (KL weight), ramped linearly from 0 over ``beta_warmup_epochs``.

    Each epoch records ``loss`` (the training objective per datapoint, averaged over the
    epoch), and, on up to ``monitor_size`` fixed training points (and validation points),
    the beta-free ``elbo``, ``recon`` = E_q log p(x|z) and ``kl`` per datapoint, plus
    ``beta`` and ``seconds``. A NaN or infinite loss raises :class:`NonFiniteLossError`.
    ``max_seconds`` is a wall-clock training budget: the fit stops after the first step that
    exceeds it (the last, partial epoch is recorded with ``partial_epoch=True``). Each
    callback receives every epoch record.
    """
    device = resolve_device(device)
    source = as_source(data)
    n = len(source)
    if n == 0:
        raise ValueError("the training data is empty; expected at least one datapoint")
    check = getattr(model, "check_data", None)
    if callable(check):
        check(first_tensor(source), what="training data")
    batch_size = min(128, n) if batch_size is None else batch_size
    _check_fit_arguments(epochs, batch_size, lr, n, beta, beta_warmup_epochs, clip_norm,
                         max_seconds)
    spec = str(parse_estimator(estimator)) if isinstance(estimator, str) else type(
        estimator).__name__
    if validation_data is not None:
        validation_data = as_source(validation_data)
        if callable(check):
            check(first_tensor(validation_data), what="validation data")
        validation_data = validation_data.to(device)
    if seed is not None:
        pyro.set_rng_seed(seed)
    model.to(device)
    source = source.to(device)
    order = torch.Generator().manual_seed(0 if seed is None else seed)
    monitor_index = torch.randperm(n, generator=order)[:monitor_size].to(device)
    monitor = source.get(monitor_index)
    validation = (None if validation_data is None else validation_data.get(
        torch.arange(min(monitor_size, len(validation_data)), device=device)))

    nesting = guess_max_plate_nesting(model, source.get(monitor_index[:2]))
    elbo = make_estimator(estimator, vectorize_particles=vectorize_particles,
                          max_plate_nesting=nesting)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    scaled = accepts_num_data(model)
    step_kwargs = {"num_data": n} if scaled else {}
    steps_per_epoch = math.ceil(n / batch_size)
    warmup_steps = int(round(beta_warmup_epochs * steps_per_epoch))
    settings = {"estimator": spec, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "seed": seed, "device": str(device), "beta": beta,
                "beta_warmup_epochs": beta_warmup_epochs, "clip_norm": clip_norm,
                "num_data": n, "minibatch_scaled": scaled, "max_seconds": max_seconds}
    result = FitResult(settings=settings)
    step = 0
    started = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), disable=quiet, desc=f"fit {spec}", unit="epoch")
    for epoch in bar:
        epoch_start = time.perf_counter()
        model.train()
        permutation = torch.randperm(n, generator=order).to(device)
        total, current_beta, seen, out_of_time = 0.0, beta, 0, False
        for batch_number, start in enumerate(range(0, n, batch_size), 1):
            batch = source.get(permutation[start:start + batch_size])
            current_beta = beta_schedule(beta, warmup_steps, step)
            opt.zero_grad(set_to_none=True)
            with scale_latent_sites(current_beta):
                loss = elbo.loss_and_grads(model.model, model.guide, *batch, **step_kwargs)
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"the loss became {loss} at epoch {epoch}, step {batch_number} "
                    f"(global step {step + 1}); lower the learning rate, set clip_norm, or "
                    "check the data and the likelihood's parameters.")
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            # a scaled batch loss estimates the full-data sum: weight it by its share B/N
            total += loss * (len(batch[0]) / n if scaled else 1.0)
            seen += len(batch[0])
            step += 1
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                out_of_time = True
                break
        record = {"epoch": epoch, "step": step, "loss": total / seen, "beta": current_beta}
        if out_of_time and seen < n:
            record["partial_epoch"] = True
        model.eval()
        record.update(_monitor_terms(model, monitor, nesting, prefix=""))
        if validation is not None:
            record.update(_monitor_terms(model, validation, nesting, prefix="val_"))
        record["seconds"] = time.perf_counter() - epoch_start
        result.history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.2f}", elbo=f"{record['elbo']:.2f}")
        for callback in callbacks:
            callback(record)
        if out_of_time:
            break
    result.seconds = time.perf_counter() - started
    return result


def _monitor_terms(model, batch: tuple, nesting: int, prefix: str) -> dict:
    terms = elbo_terms(model, batch, max_plate_nesting=nesting)
    return {prefix + key: value.mean().item() for key, value in terms.items()}
