"""PNDMScheduler with prediction_type="v_prediction" combines the raw v outputs of different
timesteps (PLMS, and the Runge-Kutta stages) and converts the combination to a noise prediction with
the current step's alpha and sample: the same denoiser as an eps model and as a v model gives
different samples, and v drops to first order (upstream: huggingface/diffusers#14816).

    .venv/bin/python benchmarks/repro_pndm_v_prediction.py
"""

import argparse

argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()

import explorer as ex  # noqa: E402

# The exact denoiser of a 1D mixture answers as an eps, v or x0 model (run_diffusers converts);
# errors against the exact probability-flow ODE at the scheduler's own final noise level.
nfes = (10, 20, 40, 80)
for name in ("PNDMScheduler", "DDIMScheduler"):
    configs = [{"prediction_type": "epsilon"}, {"prediction_type": "v_prediction"}]
    if name == "DDIMScheduler":
        configs = [{**c, "clip_sample": False} for c in configs]
    for row in ex.audit.diffusers(schedulers=[name], configs=configs, nfes=nfes):
        print(f"{name:14s} {row['overrides']['prediction_type']:13s} error " +
              " ".join(f"{row[f'error_{n}']:.2e}" for n in nfes) + f"   order {row['order']:.2f}")
