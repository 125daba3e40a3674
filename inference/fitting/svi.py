"""The public :func:`fit`: stochastic variational inference over a model's parameters.

One path serves every estimator (RenyiELBO and TraceGraph_ELBO have no
``differentiable_loss``): per step, gradients of the estimator's surrogate are accumulated by
Pyro (``loss_and_grads``), checked for NaN/inf, optionally clipped, and applied by a plain
``torch.optim`` optimizer over the module's parameters (:mod:`.loop`).

Minibatches are scaled to the full data: a model whose ``model``/``guide`` accept a
``num_data`` keyword receives the training-set size and scales its ``"data"`` plate by N/B,
so the loss is an unbiased estimate of the full-data objective; reported losses are divided
by N (per datapoint, nats). A model without ``num_data`` is run unscaled and its batch loss
is divided by B instead (the same per-datapoint number when all latents are local).

This layer writes no files: checkpoints go to the hook of a :class:`.Checkpointing` policy
(:class:`pyro_vae.CheckpointFiles` writes them to a run directory).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.inference.batching import as_source, first_tensor, objective_size
from pyro_vae.inference.devices import resolve_device
from pyro_vae.inference.estimators import make_estimator, parse_estimator
from pyro_vae.inference.estimators.compiled import compilation_obstacle
from pyro_vae.inference.evaluation import guess_max_plate_nesting
from pyro_vae.inference.fitting.data_parallel import DataParallel, particle_seed
from pyro_vae.inference.fitting.loop import Fit, _hand_over
from pyro_vae.inference.fitting.options import (
    Checkpointing,
    KLSchedule,
    Monitoring,
    NonFinitePolicy,
    Optimization,
    _is_count,
    options_from_deprecated,
)
from pyro_vae.inference.fitting.process_group import init_distributed
from pyro_vae.inference.fitting.state import ResumeError, _data_fingerprint, _stateful

logger = logging.getLogger("pyro_vae")


def accepts_num_data(model) -> bool:
    """Whether ``model.model`` takes a ``num_data`` keyword (for minibatch scaling)."""
    try:
        params = inspect.signature(model.model).parameters
    except (TypeError, ValueError):
        return False
    return "num_data" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _check_fit_arguments(epochs, batch_size, lr, n, max_seconds) -> None:
    if not _is_count(epochs, 0):
        raise ValueError(f"epochs must be a non-negative integer; got {epochs!r}. Pass e.g. "
                         "epochs=10.")
    if not _is_count(batch_size, 1):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}. Pass e.g. "
                         "batch_size=64.")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} training datapoints; use "
                         f"batch_size <= {n}.")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number; got {lr!r}. Pass e.g. lr=1e-3.")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None; got {max_seconds!r}")


@dataclass
class FitResult:
    """What a fit did: one record per epoch and the settings it ran with.

    ``skipped_steps`` counts the steps skipped for a non-finite loss or gradient (only with
    ``nonfinite='skip'``); ``resumed_from_epoch`` is the epoch of the state a resumed fit
    continued from (None for a fit run from the start).
    """

    history: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    skipped_steps: int = 0
    resumed_from_epoch: int | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    def column(self, key: str) -> list[float]:
        return [record.get(key, float("nan")) for record in self.history]


def _prepare_fit(model, data, *, estimator, epochs, batch_size, lr, seed, device,
                 validation_data, vectorize_particles, max_seconds, optimization: Optimization,
                 kl: KLSchedule, checkpoints: Checkpointing | None, policy: NonFinitePolicy,
                 monitoring: Monitoring, resume: Mapping | None, parallel) -> Fit:
    """Check fit's arguments and build its moving parts (resumed from ``resume`` when
    given): everything :func:`fit` does before its first step."""
    device = resolve_device(device)
    if parallel is not None and parallel.backend == "nccl" and device.type != "cuda":
        raise ValueError(f"the process group uses NCCL, which reduces CUDA tensors only, but "
                         f"device={str(device)!r}; train on the rank's GPU (device='cuda:"
                         "LOCAL_RANK') or set the group up with backend='gloo'.")
    source = as_source(data)
    n = len(source)
    if n == 0:
        raise ValueError("the training data is empty; expected at least one datapoint")
    check = getattr(model, "check_data", None)
    if callable(check):
        check(first_tensor(source), what="training data")
    batch_size = min(128, n) if batch_size is None else batch_size
    _check_fit_arguments(epochs, batch_size, lr, n, max_seconds)
    # without jit: a compiled step computes the eager step's numbers, so either resumes
    spec = parse_estimator(estimator).objective if isinstance(estimator, str) else type(
        estimator).__name__
    schedules = dict(checkpoints.extra_state if checkpoints is not None else {})
    for name, obj in schedules.items():
        if not _stateful(obj):
            raise TypeError(f"schedules[{name!r}] must have state_dict() and "
                            f"load_state_dict(); got {type(obj).__name__}")
    if validation_data is not None:
        validation_data = as_source(validation_data)
        if callable(check):
            check(first_tensor(validation_data), what="validation data")
        validation_data = validation_data.to(device)
    if seed is not None:
        pyro.set_rng_seed(seed if parallel is None else particle_seed(seed, parallel.rank))
    elif parallel is not None and parallel.rank > 0:
        # unseeded processes start from the same default state: part the other ranks' ways
        base = int(torch.randint(2 ** 62, (), generator=torch.default_generator))
        pyro.set_rng_seed(particle_seed(base, parallel.rank))
    model.to(device)
    source = source.to(device)
    order = torch.Generator().manual_seed(0 if seed is None else seed)
    monitor_size = monitoring.size
    monitor_index = torch.randperm(n, generator=order)[:monitor_size].to(device)
    validation = (None if validation_data is None else validation_data.get(
        torch.arange(min(monitor_size, len(validation_data)), device=device)))

    nesting = guess_max_plate_nesting(model, source.get(monitor_index[:2]))
    elbo = make_estimator(estimator, vectorize_particles=vectorize_particles,
                          max_plate_nesting=nesting)
    opt = optimization.build(model.parameters(), lr)
    lr_scheduler = (optimization.lr_schedule(opt) if optimization.lr_schedule is not None
                    else None)
    if _stateful(elbo):
        schedules.setdefault("estimator", elbo)
    for index, callback in enumerate(monitoring.callbacks):
        if _stateful(callback):
            schedules.setdefault(f"callback_{index}", callback)
    scaled = accepts_num_data(model)
    if parallel is not None and hasattr(source, "num_datapoints"):
        raise ValueError("stratified batches (a source with num_datapoints, e.g. "
                         "LabelledInEveryBatch) train in one process; drop the distributed "
                         "options or the stratified source")
    step_kwargs = {"num_data": objective_size(source)} if scaled else {}
    eager_reason = compilation_obstacle(elbo, model, source.get(monitor_index[:2]), step_kwargs,
                                        distributed=parallel is not None)
    # the keys are those of 0.1's keyword arguments: checkpoints written then still resume
    settings = {"estimator": spec, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "optimizer": optimization.name,
                "lr_schedule": None if lr_scheduler is None else type(lr_scheduler).__name__,
                "seed": seed, "device": str(device), "beta": kl.beta,
                "beta_warmup_epochs": kl.warmup_epochs, "clip_norm": optimization.clip_norm,
                "num_data": step_kwargs.get("num_data", n), "minibatch_scaled": scaled,
                "max_seconds": max_seconds,
                "monitor_size": monitor_size, "vectorize_particles": vectorize_particles,
                "nonfinite": policy.action, "max_skipped_steps": policy.max_skipped_steps,
                "world_size": 1 if parallel is None else parallel.world_size,
                "compiled": eager_reason is None, "eager_reason": eager_reason}
    saves = checkpoints is not None and checkpoints.saves
    every = checkpoints.every if checkpoints is not None else 1
    if parallel is not None:
        _check_ranks_agree(parallel, model, source, settings, validation, saves, every, resume)
        parallel.broadcast_module(model)
    run = Fit(model, source, elbo=elbo, optimizer=opt, lr_scheduler=lr_scheduler,
              schedules=schedules, settings=settings, monitor_index=monitor_index,
              order=order, nesting=nesting, batch_size=batch_size, beta=kl.beta,
              warmup_steps=int(round(kl.warmup_epochs * math.ceil(n / batch_size))),
              clip_norm=optimization.clip_norm, scaled=scaled, compiled=eager_reason is None,
              nonfinite=policy.action, max_skipped_steps=policy.max_skipped_steps,
              device=device, parallel=parallel, validation=validation)
    if resume is not None:
        run.check_compatible(resume)
        if resume["epoch"] > epochs:
            raise ResumeError(f"the checkpoint has already completed {resume['epoch']} epochs "
                              f"but epochs={epochs}; pass epochs >= {resume['epoch']}.")
        run.load_state_dict(resume)
        run.restore_random_states(resume)
    elif saves:
        run.state_dict()   # fail now, not after an epoch, if some state cannot be stored
    if eager_reason is None:
        logger.info("fit %s: compiled steps (the first step of each batch shape compiles; "
                    "jit=0 steps eagerly)", spec)
    else:
        logger.info("fit %s: eager steps: %s", spec, eager_reason)
    return run


def fit(model, data, *, estimator="elbo", epochs: int = 10, batch_size: int | None = None,
        lr: float = 1e-3, optimizer: str | Callable | Optimization = "adam",
        beta: float | KLSchedule = 1.0, seed: int | None = 0, device="cpu",
        validation_data=None, max_seconds: float | None = None,
        monitor: Monitoring | None = None, checkpoints: Checkpointing | None = None,
        nonfinite: str | NonFinitePolicy = "raise", vectorize_particles: bool = True,
        distributed: bool = False, quiet: bool = False, **deprecated) -> FitResult:
    """Fit ``model`` (anything with Pyro ``model``/``guide`` methods and torch parameters) by
    stochastic variational inference: ``estimator.loss_and_grads`` + a torch optimizer.

    ``data`` is a tensor (N, features), a tuple of tensors (``model(*batch)``) or a batch
    source; ``batch_size`` defaults to min(128, N). ``estimator`` is a spec (``'elbo'``,
    ``'meanfield'``, ``'iwae:k=5'``, ``'renyi:alpha=0.5,k=5'``, ...; see
    :mod:`pyro_vae.inference.estimators`) or a Pyro ELBO. Minibatches are scaled by N/B so the
    loss estimates the full-data objective (for a model whose ``model`` takes ``num_data``);
    reported losses are per datapoint, in nats. The step is compiled (the eager step's
    numbers, less of Pyro's per-step Python) whenever the fit qualifies, and eager otherwise,
    with the reason logged and kept in ``result.settings["eager_reason"]``
    (:mod:`pyro_vae.inference.estimators.compiled`; ``'elbo:jit=0'`` forces eager).

    The grouped options (:mod:`pyro_vae.inference.fitting.options`):

    * ``optimizer``: a name (``'adam'``, ``'adamw'``, ``'sgd'``, ``'rmsprop'``), a callable
      ``params -> Optimizer``, or ``Optimization(optimizer, lr_schedule=..., clip_norm=...)``;
    * ``beta``: the KL weight, or ``KLSchedule(beta, warmup_epochs=...)`` for a linear warm-up;
    * ``monitor``: ``Monitoring(size=1000, callbacks=(...))``: the beta-free ``elbo``,
      ``recon`` and ``kl`` per datapoint on ``size`` fixed training (and validation) points
      in each epoch record, which every callback receives;
    * ``checkpoints``: ``Checkpointing(save_state=hook, every=1, resume=state)`` hands the
      complete training state (a dict of tensors and plain values) to ``hook`` every
      ``every`` epochs and at the end, and continues from ``resume``;
      ``pyro_vae.CheckpointFiles(RUN)`` keeps it in ``RUN/checkpoint.pt``. A fit interrupted
      and resumed ends bit-identical (CPU) to the same fit run in one go; pass the same
      arguments as the interrupted run (``epochs`` may grow);
    * ``nonfinite``: ``'raise'`` (:class:`NonFiniteLossError` naming the epoch, the step and
      the site or parameters) or ``'skip'``, or ``NonFinitePolicy('skip',
      max_skipped_steps=10)``.

    ``max_seconds`` is a wall-clock budget (over all resumes): the fit stops after the first
    step that exceeds it (the partial epoch is recorded with ``partial_epoch=True``).
    Each epoch record holds ``loss`` (the training objective per datapoint), the monitored
    terms, ``beta``, ``lr``, ``skipped_steps`` and ``seconds``.

    ``distributed=True`` trains one model with every rank of a ``torch.distributed`` process
    group, joining the one ``torchrun`` describes if none is set up
    (:mod:`pyro_vae.inference.fitting.data_parallel`). Every rank calls ``fit`` with the same
    arguments and data; ``batch_size`` is the *global* batch, split among the ranks, and
    the ranks' gradients are combined into the global batch's before the non-finite check,
    clipping and the optimizer step, so the ranks stay identical.

    The 0.1 keyword arguments (``lr_schedule``, ``clip_norm``, ``beta_warmup_epochs``,
    ``monitor_size``, ``callbacks``, ``checkpoint``, ``checkpoint_every``, ``resume``,
    ``schedules``, ``max_skipped_steps``) still work, with a ``DeprecationWarning``.
    """
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True or False; got {distributed!r}")
    optimization, kl, checkpoints, policy, monitoring = options_from_deprecated(
        deprecated, optimizer=optimizer, beta=beta, checkpoints=checkpoints,
        nonfinite=nonfinite, monitor=monitor)
    parallel = None
    if distributed:
        device = init_distributed(device=device).device
        parallel = DataParallel()
    resume = checkpoints.load(distributed) if checkpoints is not None else None
    try:
        run = _prepare_fit(
            model, data, estimator=estimator, epochs=epochs, batch_size=batch_size, lr=lr,
            seed=seed, device=device, validation_data=validation_data,
            vectorize_particles=vectorize_particles, max_seconds=max_seconds,
            optimization=optimization, kl=kl, checkpoints=checkpoints, policy=policy,
            monitoring=monitoring, resume=resume, parallel=parallel)
    except ResumeError as error:
        if checkpoints is None:
            raise
        raise checkpoints.resume_error(error) from None
    settings = run.settings
    result = FitResult(settings=settings, resumed_from_epoch=None if resume is None
                       else resume["epoch"])
    started = time.perf_counter() - run.seconds

    def out_of_time() -> bool:
        if max_seconds is None:
            return False
        late = time.perf_counter() - started > max_seconds
        return late if parallel is None else parallel.any(late)   # every rank stops together

    first = run.epoch + 1
    bar = tqdm(range(first, epochs + 1), disable=quiet or bool(parallel and parallel.rank),
               desc=f"fit {settings['estimator']}", unit="epoch", initial=first - 1,
               total=epochs)
    saves = checkpoints is not None and checkpoints.saves
    for epoch in bar:
        epoch_start = time.perf_counter()
        ran_out_of_time = run.run_epoch(epoch, out_of_time)
        record = run.finish_epoch(epoch, run.validation, epoch_start)
        bar.set_postfix(loss=f"{record['loss']:.2f}", elbo=f"{record['elbo']:.2f}")
        for callback in monitoring.callbacks:
            callback(record)
        stopping = ran_out_of_time or epoch == epochs
        run.seconds = time.perf_counter() - started
        if saves and (stopping or epoch % checkpoints.every == 0):
            _hand_over(run, checkpoints.save, epoch)
        if stopping:
            break
    result.history = run.history
    result.skipped_steps = run.skipped_steps
    compiled_objective = getattr(run.elbo, "_compiled", None)
    if compiled_objective is not None:
        settings["compile_seconds"] = round(compiled_objective.compile_seconds, 3)
    result.seconds = time.perf_counter() - started
    return result


def _check_ranks_agree(parallel: DataParallel, model, source, settings: dict, validation,
                       checkpoint, checkpoint_every: int, resume) -> None:
    """Raise on every rank unless all ranks run the same fit: ranks that differ in settings,
    data, model, validation data, checkpointing or the state they resume from would train
    different models or wait forever for each other."""
    resumed = None
    if isinstance(resume, Mapping) and isinstance(resume.get("model"), Mapping):
        weights = sum(float(t.sum(dtype=torch.float64)) for t in resume["model"].values()
                      if isinstance(t, torch.Tensor) and t.is_floating_point())
        resumed = (resume.get("epoch"), resume.get("step"), f"{weights:.10g}")
    parallel.check_same({
        **{key: value for key, value in settings.items() if key != "device"},
        # to 10 digits: GPUs of different kinds may sum the same data in another order
        "data": {key: f"{value:.10g}" if isinstance(value, float) else value
                 for key, value in _data_fingerprint(source).items()},
        "parameters": [(name, tuple(p.shape)) for name, p in model.named_parameters()],
        "validation points": None if validation is None else len(validation[0]),
        "checkpoint hook": bool(checkpoint), "checkpoint_every": checkpoint_every,
        "resume (epoch, step, weight sum)": resumed,
    }, "the fit")
