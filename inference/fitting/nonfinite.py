"""The non-finite guard: a NaN or infinite loss, gradient or parameter stops the fit with an
error naming the epoch, the step and the sample site (or parameters) responsible, or, with
the ``'skip'`` policy, skips the step without updating the parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.subsample_messenger import _Subsample

from pyro_vae.models.handlers import scale_latent_sites

NONFINITE_POLICIES = ("raise", "skip")

class NonFiniteLossError(FloatingPointError):
    """The training loss, a gradient or a parameter became NaN or infinite.

    ``epoch``, ``step`` (within the epoch), ``global_step``, ``site`` (the sample site whose
    log-probability went non-finite, where one was found) and ``parameters`` (names of
    parameters with non-finite values or gradients) say where.
    """

    def __init__(self, message: str, *, epoch: int | None = None, step: int | None = None,
                 global_step: int | None = None, site: str | None = None,
                 parameters: Sequence[str] = ()):
        super().__init__(message)
        self.epoch, self.step, self.global_step = epoch, step, global_step
        self.site, self.parameters = site, list(parameters)


def non_finite_entries(obj, prefix: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors in obj holding NaN or inf."""
    if isinstance(obj, torch.Tensor):
        bad = obj.is_floating_point() and not bool(torch.isfinite(obj).all())
        return [prefix or "tensor"] if bad else []
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    return [name for key, value in items
            for name in non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))]


# ---- finding what went non-finite -------------------------------------------------------

def _non_finite_summary(tensor: torch.Tensor) -> str:
    bad = ~torch.isfinite(tensor)
    example = tensor[bad].flatten()[:3].tolist()
    return f"{int(bad.sum())} of {tensor.numel()} values, e.g. {example}"


@torch.no_grad()
def find_non_finite_site(model, batch: tuple, kwargs: Mapping, beta: float = 1.0
                         ) -> tuple[str, str] | None:
    """Trace the guide and replay the model on ``batch`` (validation off, so NaN parameters
    reach the densities) and return ``(name, description)`` of the first sample site, guide
    first, whose value or log-probability is non-finite; None when every site is finite.
    Uses the current random state: set it to the one of a failed step to redraw that step's
    latent values."""
    with pyro.validation_enabled(False), poutine.block(), scale_latent_sites(beta):
        guide_trace = poutine.trace(model.guide).get_trace(*batch, **kwargs)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(
            *batch, **kwargs)
    for role, trace in (("guide", guide_trace), ("model", model_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            value = site["value"]
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(
                    torch.isfinite(value).all()):
                what = "observed site" if site["is_observed"] else "sample site"
                return name, (f"{what} {name!r} of the {role} has non-finite values "
                              f"({_non_finite_summary(value)})")
            log_prob = scale_and_mask(site["fn"].log_prob(value), mask=site["mask"])
            if isinstance(log_prob, torch.Tensor) and not bool(torch.isfinite(log_prob).all()):
                return name, (f"the log-probability of sample site {name!r} in the {role} "
                              f"is non-finite ({_non_finite_summary(log_prob)})")
    return None


def _found(finding: tuple[str | None, str] | None, parameters: Sequence[str]) -> str:
    text = f"; {finding[1]}" if finding else ""
    return text + (f"; non-finite parameters {list(parameters[:5])}" if parameters else "")


class NonFiniteGuard:
    """The non-finite handling of a fit's steps (mixed into the loop's fit object)."""

    def _fail(self, description: str, epoch: int, batch_number: int, *, site=None,
              parameters=(), cause=None) -> None:
        """Count a non-finite step under the 'skip' policy, or raise."""
        where = f"at epoch {epoch}, step {batch_number} (global step {self.step + 1})"
        if self.nonfinite == "skip" and self.skipped_steps < self.max_skipped_steps:
            self.skipped_steps += 1
            self.skipped_in_epoch += 1
            self.optimizer.zero_grad(set_to_none=True)
            return
        if self.nonfinite == "skip":
            limit = (f", after {self.skipped_steps} skipped steps (max_skipped_steps="
                     f"{self.max_skipped_steps})")
            remedy = "raise max_skipped_steps"
        else:
            limit, remedy = "", "pass nonfinite='skip' to skip such steps"
        raise NonFiniteLossError(
            f"non-finite values {where}: {description}{limit}. Lower the learning rate, set "
            f"clip_norm, check the data and the likelihood's parameters, or {remedy}. The "
            "parameters were not updated with this step and no checkpoint was "
            "written after the last good one.",
            epoch=epoch, step=batch_number, global_step=self.step + 1, site=site,
            parameters=parameters) from cause

    def _diagnose(self, batch, beta, rng_before_step
                  ) -> tuple[tuple[str | None, str] | None, list[str]]:
        """What went non-finite in a failed step: ``(site name or None, description)`` for
        non-finite data or the first non-finite sample site (redrawn from the random state
        the step started with), or None; and the parameters with non-finite values."""
        named = dict(self.model.named_parameters())
        parameters = [name for name, p in named.items() if not bool(torch.isfinite(p).all())]
        for position, tensor in enumerate(batch):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return (None, f"batch tensor {position} holds non-finite data "
                        f"({_non_finite_summary(tensor)})"), parameters
        if not len(batch[0]):
            return None, parameters
        rng_after = torch.get_rng_state()
        torch.set_rng_state(rng_before_step)
        try:
            finding = find_non_finite_site(self.model, batch, self.step_kwargs, beta)
        finally:
            torch.set_rng_state(rng_after)
        return finding, parameters


    def _fail_non_finite(self, batch, beta, rng_before, loss: float, invalid, epoch: int,
                         batch_number: int) -> None:
        """A step whose loss is NaN/inf, or whose distributions rejected NaN parameters
        (``invalid``, this rank's ValueError): diagnose it and skip or raise. In a
        distributed fit every rank arrives here together (the loss is all-reduced) and
        takes the same decision with the same message, built from every rank's diagnosis."""
        finding, parameters = self._diagnose(batch, beta, rng_before)
        error_text = None if invalid is None else str(invalid)
        reports = [(self.parallel.rank if self.parallel else 0, finding, parameters, error_text)]
        if self.parallel is not None:
            reports = self.parallel.gather(reports[0])
        failed_rank = next((rank for rank, *_, text in reports if text is not None), None)
        found = next(((rank, f, p) for rank, f, p, _ in reports if f is not None or p), None)
        if failed_rank is not None and found is None:
            # a validation error that no NaN explains: a genuine error, raised on every rank
            if invalid is not None:
                raise invalid
            raise ValueError(f"rank {failed_rank} failed at epoch {epoch}, step "
                             f"{batch_number}: {reports[failed_rank][3]}")
        where = ""
        if found is not None and self.parallel is not None:
            where = f" (on rank {found[0]})"
        finding, parameters = (found[1], found[2]) if found is not None else (None, [])
        what = ("a distribution was given NaN parameters" if failed_rank is not None
                else f"the loss became {loss}")
        self._fail(what + _found(finding, parameters) + where, epoch, batch_number,
                   site=finding and finding[0], parameters=parameters, cause=invalid)
