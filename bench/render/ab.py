#!/usr/bin/env python3
"""Interleaved wall-time A/B: runs each command in turn, reversing the order every round, so
that a machine whose speed drifts (shared 2-core VMs do, by up to 30 %) slows every side
alike. Prints each command's median and mean, and their difference from the first command.

    bench/render/ab.py ROUNDS 'BASELINE CMD' 'OTHER CMD' ...

Commands are split on spaces (no shell), and their stdout goes to /dev/null.
"""
import os
import statistics
import subprocess
import sys
import time


def main() -> None:
    rounds = int(sys.argv[1])
    commands = [command.split() for command in sys.argv[2:]]
    samples: list[list[float]] = [[] for _ in commands]
    with open(os.devnull, "wb") as devnull:
        for command in commands:  # warm-up: page cache, helm/kustomize caches
            for _ in range(3):
                subprocess.run(command, stdout=devnull, check=True)
        for round_number in range(rounds):
            order = list(range(len(commands)))
            if round_number % 2:
                order.reverse()
            for index in order:
                started = time.perf_counter()
                subprocess.run(commands[index], stdout=devnull, check=True)
                samples[index].append((time.perf_counter() - started) * 1000)
    base_median = statistics.median(samples[0])
    base_mean = statistics.mean(samples[0])
    for command, times in zip(commands, samples):
        median = statistics.median(times)
        mean = statistics.mean(times)
        name = " ".join([os.path.basename(command[0])] + command[1:2])
        print(
            f"| {name} | {median:.2f} ms ({(median / base_median - 1) * 100:+.1f} %) "
            f"| {mean:.2f} ms ({(mean / base_mean - 1) * 100:+.1f} %) |"
        )


if __name__ == "__main__":
    main()
