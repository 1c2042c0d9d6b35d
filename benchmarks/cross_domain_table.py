#!/usr/bin/env python3
"""Markdown tables of the cross-domain protocol's reports (benchmarks/cross_domain.sh).

    cross_domain_table.py REPORT_DIR

One table per structure and density: a row per method (and variant tag), the perplexity on each
evaluation text per seed and its mean over the seeds, the mean over texts and seeds of
ln(ppl_pruned / ppl_dense) (lower is better; it weighs the texts equally), the mean wall time,
calibration and update phases, and the peak memory. The first report's dense perplexities head the
table.
"""
import glob
import json
import math
import os
import statistics
import sys

METHODS = ["magnitude", "wanda", "sparsegpt", "lobd", "kobd", "llm-surgeon"]


def load(folder):
    reports = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        if len(r.get("evaluations", [])) < 2:
            continue
        name = os.path.splitext(os.path.basename(path))[0]
        r["variant"] = name.split(f"_seed{r['seed']}", 1)[1].lstrip("_") if f"_seed{r['seed']}" in name else ""
        reports.append(r)
    return reports


def text_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def main():
    reports = load(sys.argv[1])
    if not reports:
        print("no reports")
        return
    groups = {}
    for r in reports:
        groups.setdefault((r["structure"], r["target_density"]), []).append(r)
    out = []
    for (structure, density), rows in sorted(groups.items()):
        texts = [text_name(e["text"]) for e in rows[0]["evaluations"]]
        seeds = sorted({r["seed"] for r in rows})
        dense = ", ".join(f"{t} {e['ppl_dense']:.2f}" for t, e in zip(texts, rows[0]["evaluations"]))
        out += [f"### {structure}, density {density}", "",
                f"Dense perplexity: {dense} ({rows[0]['eval_windows']} windows of {rows[0]['seqlen']} tokens); "
                f"calibration {rows[0]['nsamples']} × {rows[0]['seqlen']} tokens of {text_name(rows[0]['calib'])}, "
                f"seeds {', '.join(map(str, seeds))}.", ""]
        header = "| method | " + " | ".join(f"{t} (seed {s})" for t in texts for s in seeds)
        header += " | " + " | ".join(f"{t} (mean)" for t in texts)
        header += " | mean ln(ppl/dense) | wall s | calibration s | update s | peak GB |"
        out += [header, "|" + "---|" * (header.count("|") - 1)]
        keyed = {}
        for r in rows:
            keyed.setdefault((r["method"], r["variant"]), []).append(r)

        def order(key):
            method, variant = key
            return (METHODS.index(method) if method in METHODS else len(METHODS), variant)

        for key in sorted(keyed, key=order):
            runs = {r["seed"]: r for r in keyed[key]}
            cells = []
            for k in range(len(texts)):
                for s in seeds:
                    cells.append(f"{runs[s]['evaluations'][k]['ppl_pruned']:.2f}" if s in runs else "–")
            for k in range(len(texts)):
                values = [runs[s]["evaluations"][k]["ppl_pruned"] for s in seeds if s in runs]
                cells.append(f"**{statistics.fmean(values):.2f}**" if values else "–")
            logs = [math.log(e["ppl_pruned"] / e["ppl_dense"]) for r in runs.values() for e in r["evaluations"]]
            phases = [sum(shot["timings"][p] for shot in r["per_shot"]) for r in runs.values()
                      for p in ("calibration", "update")]
            name = key[0] + (f" ({key[1]})" if key[1] else "")
            out.append(f"| {name} | " + " | ".join(cells) +
                       f" | {statistics.fmean(logs):.4f} | {statistics.fmean(r['seconds'] for r in runs.values()):.0f}"
                       f" | {statistics.fmean(phases[0::2]):.0f} | {statistics.fmean(phases[1::2]):.0f}"
                       f" | {max(r['peak_rss_mb'] for r in runs.values()) / 1024:.1f} |")
        out.append("")
    out.append("Commands: " + "; ".join(sorted({f"`{r['command']}`" for r in reports})[:3]) + " …")
    print("\n".join(out))


if __name__ == "__main__":
    main()
