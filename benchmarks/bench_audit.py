"""The scheduler audit, whole: every *Scheduler of the installed diffusers in its common
configurations (ex.audit.diffusers), printed as a table, with the wall time (target: < 60 s on 2
cores for the pinned diffusers, with the defaults: 1D target, 1000 particles, nfes 5, 10, 20, 40).

Columns: error at n steps against the exact ODE at the scheduler's own final noise level (path
error; for stochastic schedulers, marked ~, the sliced W2 distance to the exact marginal there),
the fitted order (over the NFE spent), the fitted order at sigma = 0, NFE spent at the largest n, flags.

    .venv/bin/python benchmarks/bench_audit.py [--particles 1000] [--oracle] [--csv audit.csv] [--nfes 5 10 20 40]
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _fmt(v) -> str:
    if v is None:
        return "--"
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.2e}"


def _order(v) -> str:
    return "--" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--nfes", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--oracle", action="store_true", help="also the oracle mode (a second row per configuration)")
    parser.add_argument("--csv", default=None, help="write the rows to this CSV file")
    args = parser.parse_args()

    import explorer as ex

    start = time.perf_counter()
    oracle = "both" if args.oracle else False
    rows = ex.audit.diffusers(nfes=tuple(args.nfes), n_particles=args.particles, oracle=oracle)
    seconds = time.perf_counter() - start
    nfes = rows[0]["nfes"]

    head = f"{'scheduler':34s} {'configuration':40s} {'mode':6s} " + " ".join(f"{'n=' + str(n):>9s}" for n in nfes)
    print(head + "  order  ord@0  nfe  flags / message")
    for r in rows:
        mode = "oracle" if r["oracle"] else ""
        if r["status"] == "unsupported":
            print(f"{r['scheduler']:34s} {'':40s} {mode:6s} {r['message']}")
            continue
        mark = "~" if r["stochastic"] else " "
        errs = " ".join(f"{mark}{_fmt(r[f'error_{n}']):>8s}" for n in nfes)
        nfe = r[f"nfe_{nfes[-1]}"]
        tail = ",".join(r["flags"]) + (f"  [{r['message'][:110]}]" if r["message"] else "")
        orders = f"{_order(r['order'])}  {_order(r['order0'])}"
        spent = nfe if nfe else "--"
        print(f"{r['scheduler']:34s} {r['config'][:40]:40s} {mode:6s} {errs}  {orders}  {spent:>3}  {tail}")

    status = collections.Counter(r["status"] for r in rows)
    flags = collections.Counter(f for r in rows for f in r["flags"])
    print(f"\n{len(rows)} rows ({', '.join(f'{k}: {v}' for k, v in sorted(status.items()))}) from "
          f"{len({r['scheduler'] for r in rows})} scheduler classes; flags: "
          + ", ".join(f"{k} {v}" for k, v in flags.most_common()))
    print(f"target {rows[0]['target']}, {args.particles} particles, nfes {nfes}: {seconds:.1f} s")
    if args.csv:
        print("wrote", ex.audit.to_csv(rows, args.csv))


if __name__ == "__main__":
    main()
