"""Nineteenth round of docs/recovery_levers.md: does the basin a fit reaches depend on rounding?

The same fit of VaDE's defaults (same data, same seed, one torch thread) was measured on
two hosts of this workplace and reached different optima on seed-2 (weak MCC 0.607 in
``results/levers/contact_glue/seed-2.json``, 0.624 on an AVX-512 host). Nothing differs
between them but the floating-point kernels. This script fits the defaults once per
kernel set in ``KERNEL_SETS``, each in a fresh process so that the settings hold from
torch's import on, and records the scores of each:

* ``native``: whatever the host dispatches to (AVX-512 where it has it);
* ``avx2-host``: torch's own kernels, MKL and oneDNN held to AVX2, as on a host without
  AVX-512;
* ``generic``: torch's own kernels without vector instructions (MKL as on the host).

If the fits' outcomes move with the kernels, the basin a fit reaches is decided by
rounding, a difference of one or two instances between two configurations of a lever
table is within that noise, and a measured table is a statement about its host.

Usage (one file per instance, ``results/levers/kernel_rounding/<instance>.json``; an
instance already written is skipped)::

    python benchmarks/kernel_rounding.py seed-0 ... seed-9 random-32 random-37 random-39
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from combine_starts import STARTS, check_instances, fitted, instance_parser
from idvae._validation import write_json_atomic
from levers_vade import ROOT

OUT = ROOT / "kernel_rounding"
KERNEL_SETS = {
    "native": {},
    "avx2-host": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
    "generic": {"ATEN_CPU_CAPABILITY": "default"},
}


def kernel_fit(instance: str, kernels: str) -> dict:
    """The defaults' scores on the instance with the environment of ``KERNEL_SETS[kernels]``
    (in a process of its own that has not imported torch yet)."""
    os.environ.update(KERNEL_SETS[kernels])
    import torch

    from contact_glue import scores

    return {
        **scores(*fitted(instance, STARTS["vae"])),
        "dispatched": torch.backends.cpu.get_cpu_capability(),
    }


def host_flags() -> list[str]:
    """The host's vector-instruction flags that decide which kernels it has."""
    flags = (
        set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    )
    return sorted(flags & {"avx2", "avx512f", "avx512_vnni", "amx_tile", "fma"})


def main() -> None:
    parser = instance_parser(__doc__)
    args = parser.parse_args()
    check_instances(parser, args)
    OUT.mkdir(parents=True, exist_ok=True)
    todo = [name for name in args.instances if not (OUT / f"{name}.json").exists()]
    spawn = multiprocessing.get_context("spawn")  # a fresh process per fit: see kernel_fit
    with ProcessPoolExecutor(args.jobs, mp_context=spawn, max_tasks_per_child=1) as pool:
        futures = {
            name: {k: pool.submit(kernel_fit, name, k) for k in KERNEL_SETS} for name in todo
        }
        for name, fits in futures.items():
            record = {
                "instance": name,
                "host_flags": host_flags(),
                "fits": {c: f.result() for c, f in fits.items()},
            }
            write_json_atomic(OUT / f"{name}.json", record)
            summary = {
                c: (fit["dispatched"], round(fit["weak_mcc"], 3), round(fit["accuracy"], 3))
                for c, fit in record["fits"].items()
            }
            print(name, summary, flush=True)


if __name__ == "__main__":
    main()
