"""Write notebooks/data/audit_rows.json: the scheduler audit that notebooks/07_bring_your_own.ipynb shows,
ex.audit.diffusers(**AUDIT) (38 rows, about 3 s on one core), without the rows' wall times.

    .venv/bin/python notebooks/data/audit_rows.py

The notebook recomputes the rows its checks read (CHECKED: each a row of the same audit, from the same exact
path) and compares them with the file to the last bit."""

from __future__ import annotations

import json
from pathlib import Path

import explorer as ex

PATH = Path(__file__).with_suffix(".json")
AUDIT = dict(schedulers=["DDIMScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler"], nfes=[5, 10, 20, 40],
             n_particles=300)
CHECKED = {"DDIMScheduler": [{}, {"clip_sample": False}], "EulerDiscreteScheduler": [{}], "HeunDiscreteScheduler": [{}]}


def record(row: dict) -> dict:
    """A row as the file keeps it: everything but its wall time."""
    return {k: v for k, v in row.items() if k != "seconds"}


def main() -> None:
    rows = ex.audit.diffusers(**{**AUDIT, "nfes": tuple(AUDIT["nfes"])})
    PATH.write_text(json.dumps({"audit": AUDIT, "checked": CHECKED, "rows": [record(r) for r in rows]}, indent=0) + "\n")
    print(f"wrote {PATH} ({PATH.stat().st_size / 1e3:.0f} kB, {len(rows)} rows)")


if __name__ == "__main__":
    main()
