import os
import sys
from pathlib import Path

# Two test workers share two cores: one math thread each. Oversubscribed torch (2 workers x 2
# threads) measured 5-35x slower on the learned models; set before any test imports torch, and
# inherited by the notebook kernels and the app servers the tests start.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Property tests are derandomised: the same inputs on every run and machine.
settings.register_profile("default", derandomize=True, deadline=None, max_examples=60)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
