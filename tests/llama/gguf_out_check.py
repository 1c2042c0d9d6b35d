#!/usr/bin/env python3
"""surgeon-prune on a GGUF model, every output type: F32, F16 (the default), BF16 and Q8_0.

The model is stories260K converted to GGUF by gguf-py (llama2c_to_gguf.py); the outputs are read
back by gguf-py, an independent reader. For each type: the run exits 0; the report names the type
and the file's size; matrices have the type (norms F32; under Q8_0 the matrices whose rows are not
whole blocks of 32 — ffn_down, 172 columns — F16, and the report lists exactly those); every weight
the report counts as pruned is exactly zero in the file; the file is smaller than F32 by the
type's width; surgeon-ppl on the file agrees with the perplexity the tool measured in memory
(exactly for F32, within the type's rounding for the others); no --out-type writes the same bytes
as --out-type f16.

    gguf_out_check.py --wheel W --model M.gguf --tokenizer tok512.bin --calib C --eval E
                      --prune surgeon-prune --ppl surgeon-ppl --work DIR
"""
import argparse
import filecmp
import json
import os
import subprocess
import sys


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    for flag in ["wheel", "model", "tokenizer", "calib", "eval", "prune", "ppl", "work"]:
        parser.add_argument("--" + flag, required=True)
    args = parser.parse_args()
    for path in [args.model, args.tokenizer, args.calib, args.eval]:
        if not os.path.isfile(path):
            print(f"skipped: {path} absent")
            return 77
    sys.path.insert(0, args.wheel)
    try:
        import numpy as np
        import gguf
    except ImportError as error:
        print(f"skipped: {error}")
        return 77
    os.makedirs(args.work, exist_ok=True)
    common = ["--model", args.model, "--tokenizer", args.tokenizer, "--calib", args.calib, "--eval", args.eval,
              "--method", "llm-surgeon", "--structure", "unstructured", "--density", "0.5", "--nsamples", "8",
              "--seqlen", "128", "--eval-windows", "8", "--update-threads", "1"]

    def prune(name, extra):
        out = os.path.join(args.work, name + ".gguf")
        report = os.path.join(args.work, name + ".json")
        cmd = [args.prune] + common + ["--out", out, "--report", report] + extra
        print("$ " + " ".join(cmd), flush=True)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            print(p.stdout)
            fail(f"{name}: exit {p.returncode}")
        with open(report) as f:
            return out, json.load(f)

    expected_type = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
                     "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    sizes = {}
    pruned_masks = {}  # tensor name -> the F32 output's zeros (the pruned weights, exactly)
    for name, qtype in expected_type.items():
        out, report = prune(name, ["--out-type", name])
        if report["out_type"] != name:
            fail(f"{name}: report out_type {report['out_type']}")
        if report["out_bytes"] != os.path.getsize(out):
            fail(f"{name}: report out_bytes {report['out_bytes']}, file {os.path.getsize(out)}")
        sizes[name] = report["out_bytes"]
        reader = gguf.GGUFReader(out)
        fallback = []
        zeros = 0
        for t in reader.tensors:
            is_matrix = len(t.shape) >= 2
            want = qtype if is_matrix else gguf.GGMLQuantizationType.F32
            if is_matrix and qtype == gguf.GGMLQuantizationType.Q8_0 and int(t.shape[0]) % 32 != 0:
                want = gguf.GGMLQuantizationType.F16
                fallback.append(t.name)
            if t.tensor_type != want:
                fail(f"{name}: tensor {t.name} has type {t.tensor_type.name}, expected {want.name}")
            if t.name.startswith("blk.") and is_matrix:
                is_zero = gguf.quants.dequantize(t.data, t.tensor_type) == 0.0
                if name == "f32":
                    pruned_masks[t.name] = is_zero
                    zeros += int(np.count_nonzero(is_zero))
                else:  # every pruned weight is still exactly zero (rounding may add a few more zeros)
                    kept = int(np.count_nonzero(is_zero & pruned_masks[t.name]))
                    if kept != int(np.count_nonzero(pruned_masks[t.name])):
                        fail(f"{name}: {t.name} lost pruned zeros")
                    zeros += kept
        if sorted(fallback) != sorted(report["out_f16_fallback"]):
            fail(f"{name}: F16 fallback {report['out_f16_fallback']}, expected {fallback}")
        if qtype == gguf.GGMLQuantizationType.Q8_0 and not fallback:
            fail("q8_0: expected the ffn_down matrices (172 columns) to fall back to F16")
        if zeros != report["pruned_weights"]:
            fail(f"{name}: {zeros} zero weights in the file, the report pruned {report['pruned_weights']}")
        p = subprocess.run([args.ppl, "--model", out, "--tokenizer", args.tokenizer, "--text", args.eval,
                            "--seqlen", "128", "--max-windows", "8"], stdout=subprocess.PIPE, text=True, check=True)
        ppl = float(p.stdout.strip().splitlines()[-1].split("=")[1])
        tolerance = {"f32": 1e-9, "f16": 2e-3, "bf16": 2e-2, "q8_0": 2e-2}[name]
        relative = abs(ppl - report["ppl_pruned"]) / report["ppl_pruned"]
        print(f"  {name}: {sizes[name]} bytes, {zeros} zeros, reloaded ppl {ppl:.6f} vs {report['ppl_pruned']:.6f} "
              f"(relative {relative:.2e}), f16 fallback {len(fallback)}")
        if relative > tolerance:
            fail(f"{name}: reloaded perplexity differs by {relative:.2e} (tolerance {tolerance})")
    if not sizes["f16"] < 0.6 * sizes["f32"] or not sizes["bf16"] == sizes["f16"]:
        fail(f"sizes {sizes}: F16 and BF16 should be about half of F32")
    if not sizes["q8_0"] < sizes["f16"]:
        fail(f"sizes {sizes}: Q8_0 should be smaller than F16")
    default_out, default_report = prune("default", [])
    if default_report["out_type"] != "f16" or not filecmp.cmp(default_out, os.path.join(args.work, "f16.gguf"),
                                                                 shallow=False):
        fail("no --out-type should write what --out-type f16 writes")
    print("gguf output types: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
