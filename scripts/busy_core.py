"""Keep one CPU core busy, to run the test suite beside a noisy neighbour.

CI machines are shared; the suite must pass while something else uses the CPU.
This is the neighbour used for that check (docs/testing.md, "Suite time")::

    python scripts/busy_core.py --seconds 1800 &
    make test
    kill %1

It spins a pure-Python loop in one process (one core, no memory growth) and stops by
itself after ``--seconds``, so a forgotten run cannot outlive its purpose.
"""

from __future__ import annotations

import argparse
import time


def spin(seconds: float) -> int:
    """Busy-loop for ``seconds`` of wall time; return the number of iterations."""
    deadline = time.monotonic() + seconds
    iterations = 0
    while time.monotonic() < deadline:
        for _ in range(10_000):
            iterations += 1
    return iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1800.0, help="stop after this long")
    args = parser.parse_args()
    spin(args.seconds)


if __name__ == "__main__":
    main()
