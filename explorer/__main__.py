"""Command line: `python -m explorer train --target gmm-1d-3modes --steps N --seed S --out data/<name>.pt`
(an eps-MLP on a preset mixture) or `python -m explorer train --dataset digits|shapes --steps N --seed S
[--resume CKPT]` (an image U-Net); `python -m explorer sweep SPEC.toml [--executor local-cluster]
[--out results.parquet]` (a declarative sweep, resumable) and `python -m explorer plot results.parquet`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m explorer")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a learned eps-MLP on a preset mixture, or an image U-Net (DDPM loss)")
    what = tr.add_mutually_exclusive_group(required=True)
    what.add_argument("--target", help="mixture preset name, e.g. gmm-1d-3modes")
    what.add_argument("--dataset", choices=["digits", "shapes"], help="image dataset: train a U-Net")
    tr.add_argument("--steps", type=int, default=None, help="total steps (default 5000 mixture, 8000 images)")
    tr.add_argument("--batch-size", type=int, default=None, help="default 2000 mixture, 128 images")
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--lr-final", type=float, default=None,
                    help="mixture MLP: decay the learning rate to this along a half cosine (default: constant)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--n-train", type=int, default=20_000, help="fixed training-set size; 0 = fresh draws each step")
    tr.add_argument("--width", type=int, default=128)
    tr.add_argument("--blocks", type=int, default=3)
    tr.add_argument("--beta-start", type=float, default=1e-4, help="linear betas: first (DDPM: 1e-4)")
    tr.add_argument("--beta-end", type=float, default=0.02, help="linear betas: last (DDPM: 0.02)")
    tr.add_argument("--name", default=None, help="model name (default: the target's)")
    tr.add_argument("--out", default=None, help="output .pt (default: <name>.pt in the shipped data folder)")
    img = tr.add_argument_group("image U-Net (--dataset)")
    img.add_argument("--ema", type=float, default=0.999, help="EMA decay of the weights")
    img.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    img.add_argument("--checkpoint", default=None,
                     help="checkpoint path, written every --checkpoint-every steps (default artifacts/checkpoints/<name>.ckpt in the working directory)")
    img.add_argument("--checkpoint-every", type=int, default=500)
    img.add_argument("--resume", default=None, help="continue from this checkpoint (same settings; --steps is the total)")
    sw = sub.add_parser("sweep", help="run a declarative sweep (a TOML spec: targets, schedules, spacings, solvers, "
                        "nfes, seeds, particles, metrics) in this process or on a Dask cluster; resumable")
    sw.add_argument("spec", help="the TOML spec (its keys: explorer/analyses/solver_sweep.py)")
    sw.add_argument("--executor", default=None,
                    help="where the cells run: local-cluster (one worker process per core), dask (the scheduler "
                         "at $EXPLORER_DASK_ADDRESS) or a scheduler address tcp://host:port (default: this process)")
    sw.add_argument("--out", default=None, help="the table, .csv or .parquet (default: the spec's path with .csv); "
                    "cells already in it are not run again")
    sw.add_argument("--no-resume", action="store_true", help="run every cell and replace --out")
    sw.add_argument("--batch-size", type=int, default=None, help="cells per Dask task (default: about 0.2 s of work)")
    pl = sub.add_parser("plot", help="draw a sweep's table: a metric against NFE, a line per solver, a panel per target")
    pl.add_argument("table", help="a .csv or .parquet table written by `sweep`")
    pl.add_argument("--y", default="error", help="the metric column (default error)")
    pl.add_argument("--x", default="nfe", help="the x column (default nfe)")
    pl.add_argument("--out", default=None, help="the figure, .html (default: the table's path with .html)")
    args = parser.parse_args(argv)
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "plot":
        return _plot(args)
    if args.dataset is not None:
        return _train_image(args)
    args.steps = 5000 if args.steps is None else args.steps
    args.batch_size = 2000 if args.batch_size is None else args.batch_size

    from .learned import mlp as learned
    from .foundations import targets

    name = args.name or args.target
    target = targets.get(args.target)
    started = time.perf_counter()
    model = learned.train(target, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          n_train=args.n_train or None, width=args.width, n_blocks=args.blocks, name=name,
                          beta_start=args.beta_start, beta_end=args.beta_end, lr_final=args.lr_final)
    seconds = time.perf_counter() - started
    out = learned.save(model, Path(args.out) if args.out else learned.DATA_DIR / f"{name}.pt")
    print(f"final loss (mean of the last 100 steps): {model.config['final_loss']:.5f}")
    print(f"time: {seconds:.1f} s; wrote {out}")


def _train_image(args):
    import torch

    from .learned import image_training
    from .foundations.data_files import DATA_DIR

    name = args.name or args.dataset
    started = time.perf_counter()
    model = image_training.train(
        args.dataset, steps=8000 if args.steps is None else args.steps,
        batch_size=128 if args.batch_size is None else args.batch_size, lr=args.lr, warmup=args.warmup,
        ema_decay=args.ema, seed=args.seed, name=name, resume=args.resume,
        checkpoint=args.checkpoint or Path("artifacts") / "checkpoints" / f"{name}.ckpt",
        checkpoint_every=args.checkpoint_every)
    seconds = time.perf_counter() - started
    out = image_training.save(model, Path(args.out) if args.out else DATA_DIR / f"{name}.pt")
    print(f"final loss (mean of the last 200 steps): {model.config['final_loss']:.5f}")
    tr = model.config["training"]
    print(f"time: {seconds:.1f} s wall this run; in total {tr['seconds']:.1f} s wall, {tr['cpu_seconds']:.1f} s CPU, "
          f"on {torch.get_num_threads()} torch thread(s); wrote {out}")


def _sweep(args):
    from .analyses import solver_sweep

    out = Path(args.out) if args.out else Path(args.spec).with_suffix(".csv")
    cells, todo, _ = solver_sweep.pending(args.spec, out, resume=not args.no_resume)
    print(f"{len(cells)} cells: {len(cells) - len(todo)} already in {out}, {len(todo)} to run on "
          f"{args.executor or 'this process'}", flush=True)
    started = time.perf_counter()
    rows = solver_sweep.run(args.spec, executor=args.executor, progress=True, out=out, resume=not args.no_resume,
                            batch_size=args.batch_size)
    print(f"ran {len(todo)} cells in {time.perf_counter() - started:.1f} s; wrote {len(rows)} rows to {out}")


def _plot(args):
    from .analyses import sweeps
    from .figures.sweeps import sweep_table

    rows = sweeps.load(args.table)
    out = Path(args.out) if args.out else Path(args.table).with_suffix(".html")
    if out.suffix.lower() != ".html":
        raise SystemExit(f"--out must end in .html, got {out}")
    fig = sweep_table(rows, y=args.y, x=args.x, title=f"{args.y} against {args.x}: {Path(args.table).name}")
    fig.write_html(out, include_plotlyjs=True)
    print(f"{len(rows)} rows; wrote {out}")


if __name__ == "__main__":
    main()
