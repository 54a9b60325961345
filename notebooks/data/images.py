"""Write notebooks/data/images.npz: the two runs of notebooks/06_images.ipynb that take seconds each, kept as
what the notebook draws and checks.

    .venv/bin/python notebooks/data/images.py        # about 12 s on one core

quality: the records of the digits sweep (Q.quality_vs_nfe: euler, ddim, dpmpp-2m at 5, 10, 20 NFE on 128
images, seed 0), as JSON; shapes: the 96 Simple Shapes images of S.sample_run (DDPM on 40 of the 1000
timesteps, seed 0), their trajectory-variance scores (window 10) and the first 8 images after the first step.
The notebook runs a small part afresh and checks it against the file (ex.data_files.matches_shipped, to 1e-5:
another CPU differs in the last bits): the sweep's cheapest cell (euler at 5 NFE, the same prior draw) and the
shapes run's first step (S.run_start)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import explorer as ex
from explorer import image_quality as Q
from explorer import shapes_analysis as S
from explorer.learned import torch_threads

PATH = Path(__file__).with_suffix(".npz")
SWEEP = dict(solvers=["euler", "ddim", "dpmpp-2m"], nfes=[5, 10, 20], n=128)
SHAPES = dict(n=96, seed=0, solver="ddpm", n_steps=40)
WINDOW = 10
HEAD = 8  # images of the first step kept for the notebook's check


def quality() -> list[dict]:
    digits = ex.models.load_pretrained("digits")
    records = Q.quality_vs_nfe(digits, SWEEP["solvers"], SWEEP["nfes"], "digits", ex.datasets.digits()[0],
                               n=SWEEP["n"], train_images=digits.train_images())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def shapes() -> dict:
    model = ex.models.load_pretrained("shapes")
    run = S.sample_run(model, keep=WINDOW, **SHAPES)
    return {"samples": run.samples, "score": S.trajectory_variance(run, window=WINDOW),
            "start_head": S.run_start(model, steps=1, **SHAPES)[:HEAD]}


def main() -> None:
    start = time.perf_counter()
    with torch_threads(1):  # as the notebook runs them: one thread
        records = quality()
        runs = shapes()
    np.savez_compressed(PATH, quality=np.array(json.dumps(records)), sweep=np.array(json.dumps(SWEEP)),
                        shapes_setup=np.array(json.dumps(SHAPES)), window=np.array(WINDOW),
                        **{f"shapes_{k}": v for k, v in runs.items()})
    print(f"wrote {PATH} ({PATH.stat().st_size / 1e3:.0f} kB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
