"""Write tests/data/hallucination_runs.npz: the two 20,000-sample DDPM runs of the shipped 1D model
that test_hallucination measures (seeds 0 and 1, every timestep from t0 = 363, where x_t is pure
noise), kept as what the test reads: the samples and the variance score over the paper's window.

    .venv/bin/python tests/data/hallucination_runs.py        # about a minute on one core

sample_run seeds its particles in blocks (block b from child b of the seed), so the test checks the
file against a fresh run of the first block instead of sampling all 40,000 again."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import explorer as ex
from explorer import hallucination as H
from explorer.learned import torch_threads

PATH = Path(__file__).with_suffix(".npz")
MODEL, SEEDS, N = "gmm-1d-3modes", (0, 1), 20_000


def run(seed: int, n: int = N) -> dict:
    model = ex.models.load_pretrained(MODEL)
    t0 = H.pure_noise_t(model.schedule)
    with torch_threads(1):
        r = H.sample_run(model, n, seed=seed, n_steps=t0 + 1, t_start=t0)
    return {"samples": r.samples, "scores": H.trajectory_variance(r.denoised, H.WINDOW), "t": r.t}


def main() -> None:
    arrays = {}
    for seed in SEEDS:
        start = time.perf_counter()
        for key, value in run(seed).items():
            arrays[f"seed{seed}.{key}"] = value
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    np.savez_compressed(PATH, window=np.array(H.WINDOW), block=np.array(H.BLOCK), **arrays)
    print(f"wrote {PATH} ({PATH.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
