"""Train a VAE on the digits with every process torchrun starts (or with one, without it).

    torchrun --standalone --nproc_per_node=2 -m pyro_vae.distributed --run-dir runs/d2
    python -m pyro_vae.distributed --run-dir runs/d1        # one process

Every process runs this script; ``pyro_vae.fit(..., distributed=True)`` trains one model
with all of them (``--batch-size`` is the global batch, split among the processes). Only
rank 0 prints, writes ``RUN/log.jsonl``, the checkpoints (``RUN/checkpoint.pt``) and the
model (``RUN/model.pt``). ``--resume`` continues ``RUN`` from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import pyro_vae as pv
from pyro_vae.distributed import launched_by_torchrun, rank_zero_only


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128,
                        help="global batch, split among the processes")
    parser.add_argument("--estimator", default="elbo", help="e.g. elbo, iwae:k=5")
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda (each process's GPU), auto")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run directory for the log, checkpoints and model")
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue RUN's checkpoint")
    parser.add_argument("--max-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    if args.resume and args.run_dir is None:
        parser.error("--resume needs --run-dir DIR (the run to continue)")
    return args


def main(argv=None) -> int:
    args = parse_arguments(argv)
    distributed = launched_by_torchrun()
    data = pv.load_dataset("digits", binarize=True)
    torch.manual_seed(args.seed)   # rank 0's initial weights are sent to every process
    model = pv.VAE(data.x_dim, args.z_dim, hidden=args.hidden)
    processes = 1
    if distributed:
        processes = pv.distributed.init_distributed(device=args.device).world_size

    @rank_zero_only
    def log(record: dict) -> None:
        record = dict(record, processes=processes)
        print(f"epoch {record['epoch']:3d}  loss {record['loss']:8.3f}  elbo "
              f"{record['elbo']:8.3f}  val_elbo {record['val_elbo']:8.3f}  "
              f"{record['seconds']:6.3f} s  ({processes} process(es))", flush=True)
        if args.run_dir is not None:
            args.run_dir.mkdir(parents=True, exist_ok=True)
            with open(args.run_dir / "log.jsonl", "a") as file:
                file.write(json.dumps(record) + "\n")

    result = pv.fit(model, data.train, estimator=args.estimator, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    device=args.device, validation_data=data.validation, quiet=True,
                    callbacks=[log], checkpoint_dir=args.run_dir,
                    checkpoint_every=args.checkpoint_every,
                    resume=args.run_dir if args.resume else None,
                    max_seconds=args.max_seconds, distributed=distributed)
    seconds = [record["seconds"] for record in result.history]
    if pv.distributed.is_rank_zero():
        if args.run_dir is not None:
            pv.save_model(model, args.run_dir / "model.pt")
        if len(seconds) > 1:
            print(f"median seconds per epoch (epochs 2-{len(seconds)}): "
                  f"{statistics.median(seconds[1:]):.3f}  ({processes} process(es))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
