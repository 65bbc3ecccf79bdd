"""This host's speed against the host that measured the times in the ``cpu`` configs.

Prints ``compstudy.scale.host_reference_seconds`` (a fixed one-thread training workload) and
its ratio to the reference of the host that timed the configs' cold runs: a ratio of 2 means
expect about twice the wall times written there. Run: ``PYTHONPATH=lib python benchmarks/bench_host.py``.
"""

from __future__ import annotations

from compstudy import scale

CONFIGS_HOST_REFERENCE_S = 0.58  # the host of the configs' 2026-11-30 cold times


def main() -> None:
    seconds = scale.host_reference_seconds()
    print(f"host reference: {seconds:.3f} s; configs' host: {CONFIGS_HOST_REFERENCE_S:.2f} s; "
          f"ratio (expect the configs' wall times times this): {seconds / CONFIGS_HOST_REFERENCE_S:.2f}")


if __name__ == "__main__":
    main()
