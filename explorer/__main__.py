"""Command line: `python -m explorer train --target gmm-1d-3modes --steps N --seed S --out data/<name>.pt`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m explorer")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a learned eps-MLP on a preset mixture (DDPM loss)")
    tr.add_argument("--target", required=True, help="preset name, e.g. gmm-1d-3modes")
    tr.add_argument("--steps", type=int, default=5000)
    tr.add_argument("--batch-size", type=int, default=2000)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--n-train", type=int, default=20_000, help="fixed training-set size; 0 = fresh draws each step")
    tr.add_argument("--width", type=int, default=128)
    tr.add_argument("--blocks", type=int, default=3)
    tr.add_argument("--beta-start", type=float, default=1e-4, help="linear betas: first (DDPM: 1e-4)")
    tr.add_argument("--beta-end", type=float, default=0.02, help="linear betas: last (DDPM: 0.02)")
    tr.add_argument("--name", default=None, help="model name (default: the target's)")
    tr.add_argument("--out", default=None, help="output .pt (default data/<name>.pt)")
    args = parser.parse_args(argv)

    from . import learned, targets

    name = args.name or args.target
    target = targets.get(args.target)
    started = time.perf_counter()
    model = learned.train(target, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          n_train=args.n_train or None, width=args.width, n_blocks=args.blocks, name=name,
                          beta_start=args.beta_start, beta_end=args.beta_end)
    seconds = time.perf_counter() - started
    out = learned.save(model, Path(args.out) if args.out else learned.DATA_DIR / f"{name}.pt")
    print(f"final loss (mean of the last 100 steps): {model.config['final_loss']:.5f}")
    print(f"time: {seconds:.1f} s; wrote {out}")


if __name__ == "__main__":
    main()
