"""Start-up time of the command line, side by side with what any Python program pays.

    .venv/bin/python benchmarks/startup.py [--rounds 15]

Each row is one command run as a fresh process; rounds are interleaved (every
command once per round) so a noisy neighbour slows every row alike, and the
table shows medians. Baselines: the interpreter doing nothing
(``python -c pass``) and importing the anthropic SDK alone, the cost
``agentfsm --help`` must not pay.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS: dict[str, list[str]] = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "python -c 'import anthropic'": [sys.executable, "-c", "import anthropic"],
    "agentfsm --help": [str(BIN / "agentfsm"), "--help"],
    "agentfsm graph examples/weather_agent.py:WeatherAgent": [
        str(BIN / "agentfsm"),
        "graph",
        "examples/weather_agent.py:WeatherAgent",
    ],
    "agentfsm demo": [str(BIN / "agentfsm"), "demo"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "ANTHROPIC_API_KEY": ""}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{'command':58} {'median s':>9} {'min s':>7} {'over baseline s':>16}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:58} {med:9.3f} {min(ts):7.3f} {med - base:16.3f}")


if __name__ == "__main__":
    main()
