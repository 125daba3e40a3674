"""M1 + M2 (Kingma et al. 2014, the stacked model): M2 on the codes of a VAE, at 100 labels.

M1 is a VAE fitted to every MNIST training image without labels (by default the section 4
learning-curve VAE, 784-200-200-50 tanh, 121 epochs of Burda et al.'s schedule, read from
its training checkpoint). Each image's code is its encoder mean E_q[z1 | x] on the grey
levels, restricted to the active units (Burda et al.: Cov_x E_q[z1_u | x] > 0.01) and
standardised with the training codes' mean and sd. M2 (``SemiSupervisedVAE``) is then fitted
to the codes, p(z1 | y, z2) a Normal with a learned sd per unit, by enumeration with the 100
balanced labels that ``pyro-vae train --model m2 --labels 100`` keeps (data seed 0, the last
10,000 training images held out for validation). Validation and test accuracy of argmax
q(y | z1) after every epoch go to ``OUT/history.csv`` and the best validation epoch's model to
``OUT/best_model.pt`` (the tracker ``pyro-vae train`` uses for M2).
The baseline is the same classifier trained on the 100 labelled codes alone.

    python benchmarks/m2_stacked.py --data-dir DIR [--m1 RUN/checkpoint.pt] --out OUT

``--dataset digits --m1 RUN/model.pt`` runs the same on scikit-learn's digits (the tests do).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from m2_labelled_only import labelled_only_accuracy

import pyro_vae as pv
from pyro_vae.inference.evaluation import active_units, posterior_means
from pyro_vae.runs.builders import semi_supervised_labels
from pyro_vae.runs.class_tracking import ClassAccuracyTracker
from pyro_vae.runs.directory import HISTORY_FILE, write_history

DEFAULT_M1 = Path(__file__).parent / "results" / "mnist_curve" / "elbo" / "checkpoint.pt"
ACTIVE_UNIT_THRESHOLD = 1e-2


def active_codes(m1, splits: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Encoder means of every split on M1's active units, standardised with the training
    split's mean and sd; and the number of units the encoder has."""
    _, variances = active_units(m1, splits["train"], ACTIVE_UNIT_THRESHOLD)
    active = variances > ACTIVE_UNIT_THRESHOLD
    if not bool(active.any()):
        raise SystemExit(f"M1 has no active unit (Cov_x E_q[z1|x] <= {ACTIVE_UNIT_THRESHOLD} for "
                         f"all {active.numel()}): its codes carry nothing to classify; train it "
                         "longer or pass another --m1")
    means = {name: posterior_means(m1, x)[:, active] for name, x in splits.items()}
    centre, spread = means["train"].mean(0), means["train"].std(0)
    return {name: (m - centre) / spread for name, m in means.items()}, int(active.numel())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                        help="digits: scikit-learn's 8x8 digits, for a quick run")
    parser.add_argument("--data-dir", help="directory with the MNIST IDX files")
    parser.add_argument("--m1", type=Path, default=DEFAULT_M1,
                        help="M1: a pyro-vae VAE (saved model or training checkpoint); "
                             "default: the section 4 curve VAE")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[500])
    parser.add_argument("--z-dim", type=int, default=50)
    parser.add_argument("--alpha", type=float, default=0.1,
                        help="Kingma et al.'s alpha (weight per labelled code: alpha N / n_l)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dataset == "mnist" and args.data_dir is None:
        parser.error("--dataset mnist needs --data-dir DIR (the directory with the MNIST IDX "
                     "files)")
    torch.set_num_threads(args.threads)
    if not args.m1.is_file():
        raise SystemExit(f"--m1 {args.m1}: no such file. Pass a VAE saved by pyro-vae (a run's "
                         "model.pt or a training checkpoint), or run the section 4 curve command "
                         "first, which writes the default.")
    args.out.mkdir(parents=True, exist_ok=True)

    data = (pv.load_dataset("mnist", data_dir=args.data_dir, binarize="none",
                            validation_size=10000, validation_split="last")
            if args.dataset == "mnist" else pv.load_dataset("digits", binarize="none"))
    m1 = pv.load_model(args.m1).eval()
    codes, units = active_codes(m1, {"train": data.train, "validation": data.validation,
                                     "test": data.test})
    kept = semi_supervised_labels(data.train_labels, args.labels, args.seed)
    labelled = kept >= 0
    val_labels, test_labels = data.labels("validation"), data.labels("test")
    code_dim = codes["train"].shape[1]
    print(f"M1        {args.m1} ({type(m1).__name__}); {code_dim} of {units} units active "
          f"(Cov_x E_q[z1|x] > {ACTIVE_UNIT_THRESHOLD})")
    print(f"data      {len(codes['train'])} training codes, {int(labelled.sum())} labelled; "
          f"{len(codes['validation'])} validation, {len(codes['test'])} test")

    for step, accuracy in labelled_only_accuracy(codes["train"][labelled], kept[labelled],
                                                 codes["test"], test_labels, args.hidden,
                                                 args.lr):
        print(f"baseline  classifier on the {int(labelled.sum())} labelled codes alone, "
              f"step {step:4d}: test accuracy {accuracy:.4f}")

    torch.manual_seed(args.seed)
    m2 = pv.SemiSupervisedVAE(code_dim, 10, z_dim=args.z_dim, likelihood="normal_per_feature",
                              hidden=args.hidden, activation="softplus", alpha=args.alpha,
                              num_labelled=int(labelled.sum()))
    coded = pv.Dataset(name=f"{args.dataset} codes", train=codes["train"],
                       validation=codes["validation"], test=codes["test"], train_labels=kept,
                       validation_labels=val_labels, test_labels=test_labels)
    tracker = ClassAccuracyTracker(m2, coded, args.out)   # accuracies, best_model.pt
    records: list[dict] = []

    def record_epoch(record: dict) -> None:
        records.append(record)
        write_history(args.out / HISTORY_FILE, records)
        print(f"epoch {record['epoch']:3d}  loss {record['loss']:.4f}  validation accuracy "
              f"{record['val_accuracy']:.4f}  test accuracy {record['test_accuracy']:.4f}  "
              f"({record['seconds']:.1f} s)", flush=True)

    print(f"M2        {code_dim}-{args.hidden}-{args.z_dim} softplus, Normal(per-unit sd), "
          f"enum, alpha {args.alpha}, lr {args.lr}, batch {args.batch_size}, {args.epochs} "
          "epochs", flush=True)
    started = time.process_time()
    pv.fit(m2, (codes["train"], kept), estimator="enum", epochs=args.epochs,
           batch_size=args.batch_size, lr=args.lr, seed=args.seed, quiet=True,
           monitor=pv.Monitoring(size=500, callbacks=(tracker, record_epoch)))
    best = tracker.best(records)
    print(f"best      epoch {best['epoch']}: validation accuracy "
          f"{best['validation_accuracy']:.4f}, test accuracy {best['test_accuracy']:.4f} "
          f"({time.process_time() - started:.0f} s CPU in all)")

if __name__ == "__main__":
    main()
