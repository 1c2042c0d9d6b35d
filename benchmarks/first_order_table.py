#!/usr/bin/env python3
"""What the first-order correction gains (benchmarks/first_order.sh).

    first_order_table.py REPORT_DIR

Pairs every run tagged "first-order" with the run of the same method, structure, density and seed
without it, and prints one Markdown row per pair: each evaluation text's perplexity without and
with the correction, the perplexity increase over dense that the correction removes
(1 − (ppl_with − dense) / (ppl_without − dense), higher is better), and the ratio of the two runs'
wall times and the correction's own share.
"""
import glob
import json
import os
import sys


def main():
    folder = sys.argv[1]
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        name = os.path.splitext(os.path.basename(path))[0]
        tagged = name.endswith("_first-order")
        key = (r["method"], r["structure"], r["target_density"], r["seed"])
        runs.setdefault(key, {})["with" if tagged else "without"] = r
    texts = None
    rows = []
    for key, pair in sorted(runs.items()):
        if "with" not in pair or "without" not in pair:
            continue
        base, corrected = pair["without"], pair["with"]
        if texts is None:
            texts = [os.path.basename(e["text"]) for e in base["evaluations"]]
        cells = [key[0], key[1], f"{key[2]:g}", str(key[3])]
        for b, c in zip(base["evaluations"], corrected["evaluations"]):
            dense = b["ppl_dense"]
            gain = 1.0 - (c["ppl_pruned"] - dense) / (b["ppl_pruned"] - dense)
            cells.append(f"{b['ppl_pruned']:.2f} → {c['ppl_pruned']:.2f} ({100 * gain:+.1f} %)")
        correction = sum(s["timings"].get("correction", 0.0) for s in corrected["per_shot"])
        cells.append(f"{base['seconds']:.0f} → {corrected['seconds']:.0f} s ({corrected['seconds'] / base['seconds']:.2f}×)")
        cells.append(f"{correction:.0f} s")
        fo = corrected.get("first_order") or {}
        cells.append(f"{fo.get('steps')}+{fo.get('final_steps')} × {fo.get('batch')}, r {fo.get('rank')}, lr {fo.get('learning_rate'):g}")
        rows.append(cells)
    if not rows:
        print("no pairs of runs with and without the correction")
        return
    dense = [f"{e['ppl_dense']:.2f}" for e in next(iter(runs.values()))["without"]["evaluations"]]
    header = ["method", "structure", "density", "seed"]
    header += [f"{t} (dense {d}): without → with (increase removed)" for t, d in zip(texts, dense)]
    header += ["wall time", "correction", "steps (per shot + final) × sequences, rank, lr"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
