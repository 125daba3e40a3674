"""The baseline M2 has to beat: its classifier trained on the labelled images alone.

The same 100 balanced labels that ``pyro-vae train --model m2 --labels 100`` keeps
(``semi_supervised_labels``, data seed 0, the last 10,000 training images held out), the
classifier of Pyro's ``ss_vae_M2.py`` configuration (784-500-10, softplus), Adam on the
cross-entropy of those 100 images, full batch; test accuracy on the 10,000 test images at a
few step counts, on grey levels and on images thresholded at 0.5.

    python benchmarks/m2_labelled_only.py --data-dir DIR
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import pyro_vae as pv
from pyro_vae.models import MLP
from pyro_vae.runs.builders import semi_supervised_labels


def labelled_only_accuracy(train_x, labels, test_x, test_labels, hidden, lr,
                           steps=(100, 300, 1000, 2000)) -> list[tuple[int, float]]:
    """Test accuracy of an MLP classifier (``hidden``, softplus) trained on the labelled rows
    alone (Adam on their cross-entropy, full batch, seed 0) after each of ``steps``."""
    torch.manual_seed(0)
    net = MLP(train_x.shape[1], hidden, 10, "softplus")
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    accuracies = []
    for step in range(1, max(steps) + 1):
        optimizer.zero_grad()
        F.cross_entropy(net(train_x), labels).backward()
        optimizer.step()
        if step in steps:
            with torch.no_grad():
                accuracies.append(
                    (step, (net(test_x).argmax(-1) == test_labels).float().mean().item()))
    return accuracies


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.00042, 1e-3])
    args = parser.parse_args(argv)
    data = pv.load_dataset("mnist", data_dir=args.data_dir, binarize="none",
                           validation_size=10000, validation_split="last")
    kept = semi_supervised_labels(data.train_labels, args.labels, 0)
    rows = (kept >= 0).nonzero().flatten()
    images, labels = data.train[rows], kept[rows]
    test_images, test_labels = data.test, data.labels("test")
    print(f"{len(rows)} labelled training images; test accuracy of 784-500-10 softplus "
          "trained on them alone (Adam, full batch)")
    for kind in ("grey levels", "thresholded"):
        train_x = images if kind == "grey levels" else (images > 0.5).float()
        test_x = test_images if kind == "grey levels" else (test_images > 0.5).float()
        for lr in args.lrs:
            for step, accuracy in labelled_only_accuracy(train_x, labels, test_x, test_labels,
                                                         [500], lr):
                print(f"{kind:12s} lr {lr:<8g} step {step:5d}  test accuracy {accuracy:.4f}")

if __name__ == "__main__":
    main()
