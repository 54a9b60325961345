"""Write notebooks/data/mode_interpolation.npz: the runs of notebooks/04_mode_interpolation.ipynb that only
print or draw, kept as what the notebook shows.

    .venv/bin/python notebooks/data/mode_interpolation.py        # about 10 s on one core

exact: the exact denoiser's DDPM run from the same 20,000 starts as the shipped learned run (tests/data/
hallucination_runs.npz, seed 0); the notebook samples its first block afresh.
ddim: DDIM on the shipped 1D model, the 1,000 starts of DDPM's first block (H.sample_run, seed 0, every
timestep from t0 = 363): its samples, and its particles after the first START steps (H.run_start).
recursive: H.recursive_training_filters (variance and random, two generations of 200, 40 training steps of
256) as records without their sample arrays; and the particles of generation 0's run after START steps.
The notebook takes the START steps of the last two runs afresh, trains generation 0 again (its last loss must be the
record's), and checks them against the file (ex.data_files.matches_shipped: to 1e-5, as another CPU
differs in the last bits)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import explorer as ex
from explorer import hallucination as H
from explorer.learned import torch_threads

PATH = Path(__file__).with_suffix(".npz")
MODEL, START, N_EXACT = "gmm-1d-3modes", 8, 20_000
RECURSIVE = dict(generations=2, n_samples=200, filters=["variance", "random"], seed=0,
                 train_kwargs={"steps": 40, "batch_size": 256})


def run_setup(model) -> dict:
    t0 = H.pure_noise_t(model.schedule)
    return dict(n_steps=t0 + 1, t_start=t0)  # every timestep from t0 down to 0


def main() -> None:
    start = time.perf_counter()
    model = ex.models.load_pretrained(MODEL)
    run = run_setup(model)
    train_kwargs = {**RECURSIVE["train_kwargs"], **model.config["schedule"]}
    exact = H.sample_run(ex.AnalyticModel(model.target, model.schedule), N_EXACT, seed=0, **run)
    with torch_threads(1):  # as the notebook runs them: one thread
        ddim = H.sample_run(model, H.BLOCK, seed=0, solver="ddim", **run)
        ddim_start = H.run_start(model, H.BLOCK, seed=0, solver="ddim", steps=START, **run)
        results = H.recursive_training_filters(model.target, RECURSIVE["generations"], RECURSIVE["n_samples"],
                                               filters=RECURSIVE["filters"], seed=RECURSIVE["seed"], sample_kwargs=run,
                                               train_kwargs=train_kwargs)
        first = ex.models.train(model.target, seed=RECURSIVE["seed"], progress=False, **train_kwargs)
        n_draw = len(results[RECURSIVE["filters"][0]][0]["samples"])
        first_start = H.run_start(first, n_draw, seed=np.random.default_rng([RECURSIVE["seed"], 0]), steps=START, **run)
    assert first.history[-1] == results[RECURSIVE["filters"][0]][0]["final_loss"]
    records = {f: [{k: (v.tolist() if k == "mode_mass" else v) for k, v in r.items() if k not in ("samples", "training_set")}
                   for r in recs] for f, recs in results.items()}
    meta = {"model": MODEL, "run": run, "start_steps": START, "recursive": RECURSIVE, "records": records}
    np.savez_compressed(PATH, meta=np.array(json.dumps(meta)), exact_samples=exact.samples, ddim_samples=ddim.samples,
                        ddim_start=ddim_start, recursive_start=first_start)
    print(f"wrote {PATH} ({PATH.stat().st_size / 1e3:.0f} kB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
