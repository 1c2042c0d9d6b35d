#!/usr/bin/env python3
"""Tables and plots of surgeon-prune JSON reports (benchmarks/compare_methods.sh).

    plot_results.py REPORT_DIR --markdown FILE.md [--png FILE.png]

The Markdown has one table per model (rows sorted by structure, method, density) with the exact
command of every row. The PNG (one panel per model and structure: perplexity against density,
one line per method, log scale) is drawn with gnuplot when it is installed, else skipped.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import tempfile

METHODS = ["magnitude", "wanda", "lobd", "kobd", "sparsegpt", "llm-surgeon"]
STRUCTURES = ["unstructured", "2:4", "4:8", "rows-cols"]


def load(folder):
    reports = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        r["model_name"] = os.path.splitext(os.path.basename(r["model"]))[0]
        reports.append(r)
    return reports


def order(r):
    s = STRUCTURES.index(r["structure"]) if r["structure"] in STRUCTURES else len(STRUCTURES)
    m = METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS)
    return (r["model_name"], s, m, -r["target_density"])


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def markdown(reports):
    lines = []
    for model in sorted({r["model_name"] for r in reports}):
        rows = sorted((r for r in reports if r["model_name"] == model), key=order)
        first = rows[0]
        lines += [f"### {model}", "",
                  f"Dense perplexity {first['ppl_dense']:.4f} (wikitext-2 test, {first['eval_windows']} windows "
                  f"of {first['seqlen']} tokens).", "",
                  "| structure | method | density | achieved | ppl | params (shrunk) | shots | N×T | s | peak MB | command |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            shrunk = str(r["shrunk_parameters"]) if "shrunk_parameters" in r else ""
            lines.append(f"| {r['structure']} | {r['method']} | {r['target_density']:.2f} | "
                         f"{r['achieved_density']:.4f} | {fmt(r['ppl_pruned'])} | {shrunk} | {r['shots']} | "
                         f"{r['nsamples']}×{r['seqlen']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                         f"`{r.get('command', '')}` |")
        lines.append("")
    return "\n".join(lines)


def plot(reports, png):
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        print("gnuplot not found: no PNG (apt-get install gnuplot-nox)")
        return
    panels = []
    for model in sorted({r["model_name"] for r in reports}):
        for structure in STRUCTURES:
            sel = [r for r in reports if r["model_name"] == model and r["structure"] == structure]
            if len({r["target_density"] for r in sel}) >= 2:
                panels.append((model, structure, sel))
    if not panels:
        print("fewer than two densities per panel: no PNG")
        return
    with tempfile.TemporaryDirectory() as tmp:
        script = [f"set terminal pngcairo size {520 * len(panels)},420 font 'sans,10'",
                  f"set output '{png}'", f"set multiplot layout 1,{len(panels)}",
                  "set logscale y", "set xlabel 'density (fraction of weights kept)'",
                  "set ylabel 'wikitext-2 test perplexity'", "set key top right", "set grid",
                  "set xrange [*:*] reverse"]
        for k, (model, structure, sel) in enumerate(panels):
            plots = []
            for method in METHODS:
                pts = sorted((r["target_density"], r["ppl_pruned"]) for r in sel
                             if r["method"] == method and r["ppl_pruned"] is not None)
                if not pts:
                    continue
                data = os.path.join(tmp, f"{k}_{method}.dat")
                with open(data, "w") as f:
                    f.writelines(f"{d} {p}\n" for d, p in pts)
                plots.append(f"'{data}' using 1:2 with linespoints lt {METHODS.index(method) + 1} lw 2 title '{method}'")
            dense = sel[0]["ppl_dense"]
            plots.append(f"{dense} with lines dt 2 lc rgb 'black' title 'dense'")
            script += [f"set title '{model}, {structure}'", "plot " + ", ".join(plots)]
        script.append("unset multiplot")
        subprocess.run([gnuplot], input="\n".join(script), text=True, check=True)
    print(f"wrote {png}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--png")
    args = parser.parse_args()
    reports = load(args.folder)
    if not reports:
        raise SystemExit(f"no reports in {args.folder}")
    with open(args.markdown, "w") as f:
        f.write(markdown(reports))
    print(f"wrote {args.markdown} ({len(reports)} runs)")
    if args.png:
        plot(reports, os.path.abspath(args.png))


if __name__ == "__main__":
    main()
