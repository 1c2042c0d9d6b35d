#!/usr/bin/env python3
"""The table of benchmarks/distributed.sh: one process against several, from the two reports.

    distributed_table.py ONE.json MANY.json

Phases are process 0's (every process runs the same phases on its share); the ratio is one
process's time over the run's. Peak memory is each process's maximum resident set."""
import json
import sys

one, many = (json.load(open(p)) for p in sys.argv[1:3])
phases = ["calibration", "curvature", "costs", "selection", "update", "communication"]


def total(report, phase):
    return sum(s["timings"].get(phase, 0.0) for s in report["per_shot"])


k = many["processes"]
print(f"| phase | 1 process (s) | {k} processes (s) | speed-up |")
print("|---|---|---|---|")
for phase in phases:
    a, b = total(one, phase), total(many, phase)
    ratio = f"{a / b:.2f}x" if b > 0 else "-"
    print(f"| {phase} | {a:.1f} | {b:.1f} | {ratio} |")
pruning = [sum(total(r, p) for p in phases) for r in (one, many)]
print(f"| pruning (all of the above) | {pruning[0]:.1f} | {pruning[1]:.1f} | {pruning[0] / pruning[1]:.2f}x |")
print(f"| whole run (seconds) | {one['seconds']:.1f} | {many['seconds']:.1f} | {one['seconds'] / many['seconds']:.2f}x |")
print()
peak_one = one["peak_rss_mb"]
peaks = many["peak_rss_mb_per_process"]
print(f"peak memory: 1 process {peak_one:.0f} MB; {k} processes " +
      ", ".join(f"{p:.0f} MB ({p / peak_one:.2f}x)" for p in peaks))
print(f"perplexity (wikitext-2 test): 1 process {one['ppl_pruned']:.6f}, {k} processes {many['ppl_pruned']:.6f}")
