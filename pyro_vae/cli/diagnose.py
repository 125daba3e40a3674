"""``pyro-vae diagnose RUN``: how trustworthy are a fitted guide and its gradients?

Writes into ``RUN/diagnostics/`` (or ``--out``):

* ``snr.md``, ``snr.png``: gradient variance and signal-to-noise ratio of each estimator at
  the run's fitted parameters, for the encoder and the decoder separately, on one fixed
  minibatch (:func:`pyro_vae.gradient_snr`; for IWAE, Rainforth et al. 2018 predict the
  encoder's SNR falls with K while the decoder's rises);
* ``khat.md``, ``khat.png``, ``khat.csv``: PSIS k-hat of the guide's importance weights per
  test point (:func:`pyro_vae.psis_khat`);
* ``posterior.nc``: ArviZ InferenceData of posterior draws for chosen test points
  (:func:`pyro_vae.to_inference_data`), with posterior and prior predictive groups;
* ``ppc.md``, ``ppc.png``: a posterior predictive check on the first points of the split:
  per-feature means and variances and the mean feature variance of data replicated from the
  fitted model against the data's, with its p-value (:func:`pyro_vae.plots.plot_ppc`).

Existing outputs are never replaced; choose another ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae.cli.common import (
    add_run_arguments,
    add_split_argument,
    int_list,
    open_run_and_model,
    positive_int,
)
from pyro_vae.runs.config import ConfigError

HELP = "gradient SNR per estimator, PSIS k-hat of the guide and ArviZ posterior draws of a run"
OUTPUTS = ("snr.md", "snr.png", "khat.md", "khat.png", "khat.csv", "posterior.nc", "ppc.md",
           "ppc.png")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("diagnose", help=HELP, description=HELP + ". Writes "
                                   "RUN/diagnostics/ (snr.md, snr.png, khat.md, khat.png, "
                                   "khat.csv, posterior.nc, ppc.md, ppc.png).")
    add_run_arguments(parser, "seed of the draws (default 0)")
    add_split_argument(parser)
    parser.add_argument("--out", metavar="DIR", help="output directory (default "
                        "RUN/diagnostics)")
    parser.add_argument("--estimators", nargs="+", metavar="SPEC",
                        default=["iwae:k=1", "iwae:k=5", "iwae:k=50"],
                        help="estimators for the gradient SNR; default iwae:k=1 iwae:k=5 "
                        "iwae:k=50")
    parser.add_argument("--snr-draws", type=positive_int, default=100, metavar="N",
                        help="gradient draws per estimator (default 100, >= 2)")
    parser.add_argument("--snr-batch", type=positive_int, default=100, metavar="N",
                        help="size of the fixed minibatch (the first N training points; "
                        "default 100)")
    parser.add_argument("--khat-samples", type=positive_int, default=1000, metavar="K",
                        help="importance draws per point for k-hat (default 1000, >= 50)")
    parser.add_argument("--khat-points", type=positive_int, default=500, metavar="N",
                        help="the first N points of --split (default 500)")
    parser.add_argument("--points", type=int_list, default=[0, 1, 2], metavar="I[,I...]",
                        help="indices into --split for posterior.nc (default 0,1,2)")
    parser.add_argument("--posterior-draws", type=positive_int, default=1000, metavar="N",
                        help="draws per chain for posterior.nc (4 chains; default 1000)")
    parser.add_argument("--ppc-points", type=positive_int, default=200, metavar="N",
                        help="the first N points of --split for the predictive check "
                        "(default 200)")
    parser.add_argument("--ppc-draws", type=positive_int, default=100, metavar="S",
                        help="replicated datasets for the predictive check (default 100)")
    parser.add_argument("--skip", nargs="+", choices=["snr", "khat", "posterior", "ppc"],
                        default=[],
                        help="diagnostics to leave out")
    return parser


def run(args: argparse.Namespace) -> int:
    import pyro_vae as pv
    from pyro_vae.inference.batching import as_source
    from pyro_vae.inference.comparison import first_points
    from pyro_vae.inference.diagnostics import MIN_KHAT_SAMPLES
    from pyro_vae.inference.estimators import parse_estimator
    from pyro_vae.plots.comparison import plot_gradient_snr, plot_khat_results
    from pyro_vae.studies.comparison import (
        csv_text,
        gradient_snr_markdown,
        khat_markdown,
        save_figure,
        write_text,
    )

    for spec in args.estimators:
        try:
            parse_estimator(spec)
        except ValueError as error:
            raise ConfigError(f"--estimators: {error}") from None
    if args.khat_samples < MIN_KHAT_SAMPLES:
        raise ConfigError(f"--khat-samples must be at least {MIN_KHAT_SAMPLES} (1000 or more "
                          f"is advisable); got {args.khat_samples}")
    if args.snr_draws < 2:
        raise ConfigError(f"--snr-draws must be at least 2 (a standard deviation needs two "
                          f"draws); got {args.snr_draws}")
    run_dir, model, dataset = open_run_and_model(args)
    out = Path(args.out) if args.out else run_dir.path / "diagnostics"
    wanted = {"snr": OUTPUTS[:2], "khat": OUTPUTS[2:5], "posterior": OUTPUTS[5:6],
              "ppc": OUTPUTS[6:]}
    targets = [out / name for key, names in wanted.items() if key not in args.skip
               for name in names]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise ConfigError(f"these diagnostics already exist: {existing}; choose another --out "
                          "(nothing was written)")
    seed = 0 if args.seed is None else args.seed
    data = dataset.split(args.split).to(args.device)
    if "posterior" not in args.skip:
        bad = [i for i in args.points if not 0 <= i < len(data)]
        if bad:
            raise ConfigError(f"--points {bad} are outside the {len(data)} points of the "
                              f"{args.split} split; use indices 0..{len(data) - 1}")
    out.mkdir(parents=True, exist_ok=True)
    if "snr" not in args.skip:
        train = as_source(dataset.train).to(args.device)
        batch = first_points(train, min(args.snr_batch, len(train)))   # drawn once
        snr = pv.gradient_snr(model, batch.tensors, args.estimators, num_draws=args.snr_draws,
                              seed=seed)
        write_text(out / "snr.md", gradient_snr_markdown(snr))
        save_figure(plot_gradient_snr(snr), out / "snr.png")
        print(gradient_snr_markdown(snr))
    if "khat" not in args.skip:
        points = first_points(data, min(args.khat_points, len(data)))
        khat = pv.psis_khat(model, points, args.khat_samples, seed=seed)
        name = f"{run_dir.path.name} ({args.split})"
        write_text(out / "khat.md", khat_markdown({name: khat}))
        write_text(out / "khat.csv", csv_text([{"index": i, "khat": float(k)}
                                                for i, k in enumerate(khat.khat.tolist())]))
        save_figure(plot_khat_results({name: khat}), out / "khat.png")
        print(khat_markdown({name: khat}))
    if "posterior" not in args.skip:
        idata = pv.to_inference_data(model, data, args.points,
                                     num_draws=args.posterior_draws, seed=seed)
        pv.save_inference_data(idata, out / "posterior.nc")
    if "ppc" not in args.skip:
        from pyro_vae.plots.ppc import plot_ppc, ppc_markdown, ppc_statistics
        count = min(args.ppc_points, len(data))
        idata = pv.to_inference_data(model, data, list(range(count)), num_draws=args.ppc_draws,
                                     num_chains=1, resample=False, seed=seed)
        stats = ppc_statistics(idata)
        write_text(out / "ppc.md", ppc_markdown(stats, f"{run_dir.path.name} ({args.split}, "
                                                       f"{count} points)"))
        save_figure(plot_ppc(idata), out / "ppc.png")
        print(ppc_markdown(stats, f"{run_dir.path.name} ({args.split}, {count} points)"))
    written = [p.name for p in targets if p.exists()]
    print(f"written    {', '.join(written)} in {out}")
    return 0
