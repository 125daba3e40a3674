"""The training loop: steps, epochs and their records.

Per step, gradients of the estimator's surrogate are accumulated by Pyro
(``elbo.loss_and_grads``), checked for NaN/inf, optionally clipped, and applied by a plain
``torch.optim`` optimizer over the module's parameters. The step keeps the device busy: the
built-in estimators return the loss as a tensor on the device (``device_loss_and_grads``), the
epoch's running loss is summed there and read once, and the one value a step reads back is the
flag "loss and gradient norm are finite", which the non-finite guard needs before it lets the
optimizer step. A compiled step (the default where the fit qualifies, see
:mod:`pyro_vae.inference.estimators.compiled`) replays a recorded graph instead of tracing the
model every step; the steps of a KL warm-up (a new beta each) run eagerly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from pyro_vae.inference.batching import objective_size
from pyro_vae.inference.evaluation import elbo_terms
from pyro_vae.inference.fitting.data_parallel import DataParallel
from pyro_vae.inference.fitting.nonfinite import (
    NonFiniteGuard,
    NonFiniteLossError,
    non_finite_entries,
)
from pyro_vae.inference.fitting.options import beta_schedule
from pyro_vae.inference.fitting.state import ResumableFit, capture_rng_state
from pyro_vae.models.handlers import scale_latent_sites


class Fit(ResumableFit, NonFiniteGuard):
    """One fit's moving parts and progress; :meth:`state_dict` / :meth:`load_state_dict`
    capture and restore all of it (see :mod:`.state`)."""

    def __init__(self, model, source, *, elbo, optimizer, lr_scheduler, schedules: dict,
                 settings: dict, monitor_index, order: torch.Generator, nesting: int,
                 batch_size: int, beta: float, warmup_steps: int, clip_norm, scaled: bool,
                 compiled: bool, nonfinite: str, max_skipped_steps: int, device,
                 parallel: DataParallel | None = None, validation: tuple | None = None):
        self.model, self.source, self.elbo = model, source, elbo
        self.validation = validation
        self.optimizer, self.lr_scheduler, self.schedules = optimizer, lr_scheduler, schedules
        self.settings, self.monitor_index, self.order = settings, monitor_index, order
        self.nesting, self.batch_size, self.beta = nesting, batch_size, beta
        self.warmup_steps, self.clip_norm, self.scaled = warmup_steps, clip_norm, scaled
        self.compiled = compiled
        self.nonfinite, self.max_skipped_steps, self.device = nonfinite, max_skipped_steps, device
        self.parallel = parallel
        # bound once: a compiled estimator keys its graph on them, and every step saves the
        # attribute lookups; the parameters are the optimizer's, fixed for the fit
        self.model_fn, self.guide_fn = model.model, model.guide
        self.parameters = list(model.parameters())
        # the estimator can leave the loss on the device (no host read per site): used
        # unless the gradients are all-reduced, which needs the loss on the host anyway
        self.device_loss = parallel is None and callable(
            getattr(elbo, "device_loss_and_grads", None))
        self.n = len(source)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.num_data = objective_size(source)
        self.step_kwargs = {"num_data": self.num_data} if scaled else {}
        self.current_beta = beta
        # progress: completed epochs, batches processed (global), and the unfinished epoch
        self.epoch, self.step, self.skipped_steps = 0, 0, 0
        self.permutation: torch.Tensor | None = None
        self.batch_in_epoch, self.loss_sum, self.seen, self.skipped_in_epoch = 0, 0.0, 0, 0
        self.history: list[dict] = []
        self.seconds = 0.0
        # random states at the step boundary where the time budget cut an epoch short: a
        # resumed fit continues from there, before the partial record's monitor draws
        self.rng_at_stop: dict | None = None

    # -- state ---------------------------------------------------------------------------

    def train_step(self, batch, epoch: int, batch_number: int, global_size: int) -> None:
        """One optimizer step on ``batch`` (this rank's shard of a global batch of
        ``global_size`` points; the whole batch in one process).

        With an estimator that leaves the loss on the device the step reads one value to
        the host, the flag "loss and gradient norm are finite" that decides whether the
        optimizer may step; the running loss stays on the device until the epoch's record.
        """
        model, optimizer = self.model, self.optimizer
        beta = beta_schedule(self.beta, self.warmup_steps, self.step)
        self.current_beta = beta
        rng_before = torch.get_rng_state()
        # while beta ramps up every step has its own KL weight: a compiled estimator would
        # compile each one, so those steps run eagerly
        compiled = self.compiled and self.step >= self.warmup_steps
        if compiled:
            cuda_rng_before = (torch.cuda.get_rng_state(batch[0].device)
                               if batch[0].device.type == "cuda" else None)
        invalid, loss = self._estimate(batch, beta, compiled)
        if self.parallel is not None:
            # the loss and gradient of the global batch, identical on every rank
            weight = len(batch[0]) / global_size if self.scaled else 1.0
            loss = self.parallel.combine_gradients(model.parameters(), loss, weight)
        params, grad_norm, loss_finite, grads_finite = self._finite_check(loss)
        if compiled and self.parallel is None and not (loss_finite and grads_finite):
            # a graph does not validate distributions: the same step, same draws, eagerly,
            # so a failed step is found and reported exactly as an eager fit reports it
            torch.set_rng_state(rng_before)
            if cuda_rng_before is not None:
                torch.cuda.set_rng_state(cuda_rng_before, batch[0].device)
            invalid, loss = self._estimate(batch, beta, compiled=False)
            params, grad_norm, loss_finite, grads_finite = self._finite_check(loss)
        if invalid is not None or not loss_finite:
            self._fail_non_finite(batch, beta, rng_before, float(loss), invalid, epoch,
                                  batch_number)
            return
        if not grads_finite:
            bad = [name for name, p in model.named_parameters()
                   if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            if bad:
                what = f"the gradient of parameter(s) {bad[:5]} became non-finite"
            else:   # every element finite, yet the total norm overflowed its dtype
                name, p = max(((n, p) for n, p in model.named_parameters()
                               if p.grad is not None),
                              key=lambda item: float(item[1].grad.abs().max()))
                what = (f"every gradient element is finite but their total norm overflows "
                        f"{str(grad_norm.dtype).removeprefix('torch.')} (largest |gradient| "
                        f"{float(p.grad.abs().max()):.3g}, in {name}); the gradients are far "
                        "too large: lower the learning rate or rescale the data (e.g. log1p "
                        "of counts)")
                bad = [name]
            self._fail(f"{what} (loss {float(loss):.6g})", epoch, batch_number, parameters=bad)
            return
        if self.clip_norm is not None and params:
            torch.nn.utils.clip_grads_with_norm_(params, self.clip_norm, grad_norm)
        optimizer.step()
        # a scaled batch loss estimates the full-data sum: weight it by its share b/N
        self.loss_sum = self.loss_sum + loss * (global_size / self.num_data if self.scaled
                                                else 1.0)
        self.seen += global_size

    def _finite_check(self, loss) -> tuple[list, torch.Tensor | None, bool, bool]:
        """(parameters with a gradient, their total gradient norm, whether the loss is finite,
        whether the gradients are): one host read for a loss left on the device."""
        params = [p for p in self.parameters if p.grad is not None]
        grad_norm = (torch.nn.utils.get_total_norm([p.grad for p in params]) if params
                     else None)
        if isinstance(loss, torch.Tensor):
            checks = [torch.isfinite(loss)] + ([] if grad_norm is None else [
                torch.isfinite(grad_norm).to(loss.device)])
            finite = torch.stack(checks).tolist()   # the step's one host synchronisation
            return params, grad_norm, finite[0], all(finite[1:])
        return (params, grad_norm, math.isfinite(loss),
                grad_norm is None or bool(torch.isfinite(grad_norm)))

    def _estimate(self, batch, beta: float, compiled: bool):
        """Zero the gradients, then accumulate the estimator's gradients on ``batch``:
        ``(None, loss)``, or ``(error, nan)`` when distribution validation rejected NaN
        parameters before any loss existed."""
        self.optimizer.zero_grad(set_to_none=True)
        if not len(batch[0]):   # a rank's shard of a small last batch can be empty
            return None, 0.0
        try:
            with scale_latent_sites(beta):
                if self.device_loss:
                    return None, self.elbo.device_loss_and_grads(
                        self.model_fn, self.guide_fn, *batch, compiled=compiled,
                        **self.step_kwargs)
                return None, self.elbo.loss_and_grads(self.model_fn, self.guide_fn, *batch,
                                                      **self.step_kwargs)
        except ValueError as error:
            if "found invalid values" not in str(error):
                raise
            return error, float("nan")

    def step_on(self, indices: torch.Tensor, epoch: int, batch_number: int) -> None:
        """Fetch the global batch of rows ``indices`` (this rank's share of it) and take
        one training step on it: all that a fit does per step."""
        if self.parallel is not None:
            batch = self.source.get(self.parallel.shard(indices))
        else:
            batch = self.source.get(indices)
        self.train_step(batch, epoch, batch_number, global_size=len(indices))
        self.step += 1
        self.batch_in_epoch = batch_number

    def run_epoch(self, epoch: int, out_of_time: Callable[[], bool]) -> bool:
        """Train the rest of ``epoch``; True when a step crossed the time budget."""
        self.model.train()
        if self.batch_in_epoch == 0:
            self.permutation = torch.randperm(self.n, generator=self.order)
        permutation = self.permutation.to(self.device)
        self.current_beta = beta_schedule(self.beta, self.warmup_steps, self.step)
        starts = range(self.batch_in_epoch * self.batch_size, self.n, self.batch_size)
        for batch_number, start in enumerate(starts, self.batch_in_epoch + 1):
            self.step_on(permutation[start:start + self.batch_size], epoch, batch_number)
            if out_of_time():
                if self.batch_in_epoch < self.steps_per_epoch:
                    self.rng_at_stop = capture_rng_state()
                return True
        return False

    def _monitor_terms(self, rows: Callable[[torch.Tensor], tuple], count: int,
                       prefix: str) -> dict:
        """Beta-free ``elbo``, ``recon`` and ``kl`` per datapoint, averaged over ``count``
        monitor points (``rows(positions)`` fetches some of them). A distributed fit splits
        the points among the ranks and sums the ranks' totals, so every point weighs the
        same."""
        positions = torch.arange(count, device=self.device)
        if self.parallel is None:
            terms = elbo_terms(self.model, rows(positions), max_plate_nesting=self.nesting)
            return {prefix + key: value.mean().item() for key, value in terms.items()}
        mine = self.parallel.shard(positions)
        # a rank without points evaluates one (for the names) and contributes nothing
        terms = elbo_terms(self.model, rows(mine if len(mine) else positions[:1]),
                           max_plate_nesting=self.nesting)
        keys = sorted(terms)
        totals = torch.stack([terms[key].sum(dtype=torch.float64) for key in keys]).cpu()
        if not len(mine):
            totals = torch.zeros_like(totals)
        totals = self.parallel.sum(totals)
        return {prefix + key: float(total) / count for key, total in zip(
            keys, totals, strict=True)}

    def finish_epoch(self, epoch: int, validation, epoch_start: float) -> dict:
        partial = self.batch_in_epoch < self.steps_per_epoch
        lr = float(self.optimizer.param_groups[0].get("lr", float("nan")))
        record = {"epoch": epoch, "step": self.step,
                  "loss": float(self.loss_sum) / self.seen if self.seen else float("nan"),
                  "beta": self.current_beta, "lr": lr, "skipped_steps": self.skipped_in_epoch}
        if partial:
            record["partial_epoch"] = True
        else:
            self.epoch = epoch
            self.permutation, self.batch_in_epoch = None, 0
            self.loss_sum, self.seen, self.skipped_in_epoch = 0.0, 0, 0
            if self.lr_scheduler is not None:
                if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.lr_scheduler.step(record["loss"])
                else:
                    self.lr_scheduler.step()
        self.model.eval()
        record.update(self._monitor_terms(lambda at: self.source.get(self.monitor_index[at]),
                                          len(self.monitor_index), prefix=""))
        if validation is not None:
            record.update(self._monitor_terms(lambda at: tuple(t[at] for t in validation),
                                              len(validation[0]), prefix="val_"))
        record["seconds"] = time.perf_counter() - epoch_start
        self.history.append(record)
        return record


def _hand_over(run: Fit, checkpoint: Callable[[dict], None], epoch: int) -> None:
    """Give the checkpoint hook the current state, unless it holds non-finite values."""
    state = run.state_dict()
    bad = non_finite_entries({"model": state["model"], "optimizer": state["optimizer"]})
    if bad:
        raise NonFiniteLossError(
            f"after epoch {epoch} the training state holds non-finite values ({bad[:5]}); "
            "this state was not checkpointed, the last good checkpoint stands. Lower the "
            "learning rate or set clip_norm.", epoch=epoch,
            parameters=[name.removeprefix("model.") for name in bad
                        if name.startswith("model.")])
    checkpoint(state)
