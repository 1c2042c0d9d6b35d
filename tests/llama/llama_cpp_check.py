#!/usr/bin/env python3
"""surgeon's GGUF outputs in the real llama.cpp (built by scripts/fetch-llama-cpp.sh).

For a GGUF model (stories260K converted by llama2c_to_gguf.py in CI; SmolLM2 too when given and
cached), surgeon-prune writes the pruned model as F32, F16 and Q8_0, and for each file:
- llama.cpp loads it and scores the same windows as surgeon-ppl: surgeon-ppl writes its token ids
  (`--dump-tokens`) and llama_cpp_ppl.cpp, a small program against llama.cpp's library, computes
  METHOD.md §8's perplexity on them; the two agree to 1e-3 relative for F32 and F16, 1e-2 for Q8_0;
- llama-simple generates a few tokens greedily from it (exit 0, some text).
Then "prune, then llama-quantize": llama-quantize turns the pruned F16 file into Q4_K_M (with its
own fallbacks for rows that are not whole 256-blocks) and Q8_0; surgeon reads llama.cpp's
quantised files (K-quants included) and its perplexity on them agrees with llama.cpp's to 1e-2,
and every tensor surgeon dequantises equals gguf-py's dequantisation bit for bit.
Compaction (compact_check.cpp): stories260K with a fixed set of FFN neurons and attention heads
zeroed (whole FFNs and attentions of blocks, a whole KV group, block 0 without heads), compacted and
written as GGUF "deci": llama.cpp loads it, its perplexity agrees with surgeon-ppl's on the same file
to 1e-3 relative, and surgeon-ppl's on it equals surgeon-ppl's on the uncompacted zeroed model to
1e-4; llama-simple generates from it. Then surgeon-prune --structure neurons-heads (LLM Surgeon, on
stories260K and SmolLM2) cuts the pruned units out of the file it writes: the cut model's
perplexity equals the zeroed one's to 1e-4 (the report's ppl_compacted against ppl_pruned), and
llama.cpp scores the written file as surgeon-ppl does, to 1e-3.

    llama_cpp_check.py --llama-cpp BUILD --wheel W --model M.gguf --tokenizer TOK --calib C --eval E
                       --prune surgeon-prune --ppl surgeon-ppl --test-gguf test_gguf
                       --compact-check compact_check --work DIR
                       [--smollm2 PATH]

Exits 77 (skipped) when llama.cpp's build, the wheel or an input is absent.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def run(cmd, **kwargs):
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if p.returncode != 0:
        print(p.stdout)
        fail(f"exit {p.returncode}: {' '.join(cmd[:2])}")
    return p.stdout


def last_ppl(output):
    return float(output.strip().splitlines()[-1].split("=")[1])


def main() -> int:
    parser = argparse.ArgumentParser()
    for flag in ["llama-cpp", "wheel", "model", "tokenizer", "calib", "eval", "prune", "ppl", "work"]:
        parser.add_argument("--" + flag, required=True)
    parser.add_argument("--test-gguf", required=True, help="the test_gguf binary")
    parser.add_argument("--compact-check", required=True, help="the compact_check binary")
    parser.add_argument("--smollm2", default="")
    parser.add_argument("--cxx", default="c++")
    args = parser.parse_args()
    bin_dir = os.path.join(args.llama_cpp, "bin")
    src = os.path.join(os.path.dirname(os.path.abspath(args.llama_cpp)), "src")
    tools = {name: os.path.join(bin_dir, name) for name in ["llama-quantize", "llama-simple"]}
    for path in list(tools.values()) + [args.model, args.tokenizer, args.calib, args.eval]:
        if not os.path.exists(path):
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

    # The reference program, against llama.cpp's library.
    ppl_ref = os.path.join(args.work, "llama_cpp_ppl")
    run([args.cxx, "-O2", "-std=c++17", os.path.join(HERE, "llama_cpp_ppl.cpp"), "-I", os.path.join(src, "include"),
         "-I", os.path.join(src, "ggml", "include"), "-L", bin_dir, "-lllama", "-lggml", "-lggml-base",
         f"-Wl,-rpath,{bin_dir}", "-o", ppl_ref])

    def compare(model, tokenizer, seqlen, windows, tolerance, label):
        tokens = os.path.join(args.work, label + ".tokens")
        cmd = [args.ppl, "--model", model, "--text", args.eval, "--seqlen", str(seqlen), "--max-windows", str(windows),
               "--dump-tokens", tokens]
        if tokenizer:
            cmd += ["--tokenizer", tokenizer]
        ours = last_ppl(run(cmd))
        theirs = last_ppl(run([ppl_ref, model, tokens, str(seqlen), str(windows)]))
        relative = abs(ours - theirs) / theirs
        print(f"  {label}: surgeon-ppl {ours:.6f}  llama.cpp {theirs:.6f}  relative {relative:.2e} "
              f"(tolerance {tolerance:g})", flush=True)
        if relative > tolerance:
            fail(f"{label}: perplexities differ by {relative:.2e}")
        return ours

    def generate(model, label):
        out = run([tools["llama-simple"], "-m", model, "-n", "16", "Once upon a time"])
        if "Once upon a time" not in out:
            fail(f"{label}: llama-simple printed no continuation of the prompt")
        print(f"  {label}: llama-simple generated text", flush=True)

    def check_model(model, tokenizer, seqlen, windows, nsamples, method, label):
        base = [args.prune, "--model", model, "--calib", args.calib, "--eval", args.eval, "--method", method,
                "--density", "0.5", "--nsamples", str(nsamples), "--seqlen", str(seqlen), "--eval-windows", "2"]
        if tokenizer:
            base += ["--tokenizer", tokenizer]
        outputs = {}
        for out_type, tolerance in [("f32", 1e-3), ("f16", 1e-3), ("q8_0", 1e-2)]:
            out = os.path.join(args.work, f"{label}_{out_type}.gguf")
            run(base + ["--out", out, "--out-type", out_type])
            outputs[out_type] = out
            compare(out, tokenizer, seqlen, windows, tolerance, f"{label} {out_type}")
            generate(out, f"{label} {out_type}")
        # Prune, then llama-quantize.
        for quant in ["Q4_K_M", "Q8_0"]:
            out = os.path.join(args.work, f"{label}_{quant}.gguf")
            run([tools["llama-quantize"], outputs["f16"], out, quant])
            compare(out, tokenizer, seqlen, windows, 1e-2, f"{label} f16 -> llama-quantize {quant}")
            check_dequantisation(out, f"{label} {quant}")

    def check_dequantisation(path, label):
        # gguf-py's dequantisation of every tensor of llama.cpp's file, as F32 tensors of the same
        # names; test_gguf "[reference-file]" compares surgeon's dequantisation with them bit for bit.
        reader = gguf.GGUFReader(path)
        types = sorted({t.tensor_type.name for t in reader.tensors})
        expected = os.path.join(args.work, os.path.basename(path) + ".expected.gguf")
        writer = gguf.GGUFWriter(expected, "reference")
        for t in reader.tensors:
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            writer.add_tensor(t.name, values.reshape(values.shape))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        env = dict(os.environ, SURGEON_GGUF_QUANTIZED=path, SURGEON_GGUF_EXPECTED=expected)
        print(f"$ test_gguf [reference-file] on {path}", flush=True)
        p = subprocess.run([args.test_gguf, "[reference-file]"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            print(p.stdout)
            fail(f"{label}: surgeon's dequantisation differs from gguf-py's (exit {p.returncode})")
        print(f"  {label}: tensor types {types}, every tensor dequantised as gguf-py does", flush=True)

    def check_compaction(model, tokenizer, seqlen, windows, label):
        # The zeroed model as it is, and compacted to GGUF "deci": the same function.
        zeroed = os.path.join(args.work, f"{label}_zeroed.gguf")
        compact = os.path.join(args.work, f"{label}_compact.gguf")
        print(run([args.compact_check, model, zeroed, compact]), end="", flush=True)
        arch = gguf.GGUFReader(compact).fields["general.architecture"]
        if bytes(arch.parts[arch.data[0]]).decode() != "deci":
            fail(f"{label}: the compacted file is not GGUF 'deci'")
        ppl_compact = compare(compact, tokenizer, seqlen, windows, 1e-3, f"{label} compacted (deci)")
        cmd = [args.ppl, "--model", zeroed, "--text", args.eval, "--seqlen", str(seqlen), "--max-windows",
               str(windows)] + (["--tokenizer", tokenizer] if tokenizer else [])
        ppl_zeroed = last_ppl(run(cmd))
        relative = abs(ppl_compact - ppl_zeroed) / ppl_zeroed
        print(f"  {label}: surgeon-ppl zeroed {ppl_zeroed:.6f}  compacted {ppl_compact:.6f}  relative "
              f"{relative:.2e} (tolerance 1e-4)", flush=True)
        if relative > 1e-4:
            fail(f"{label}: compaction changed the perplexity by {relative:.2e}")
        generate(compact, f"{label} compacted (deci)")

    def check_units(model, tokenizer, seqlen, windows, nsamples, density, shots, label):
        # surgeon-prune --structure neurons-heads: the units cut out of the written GGUF ("deci"
        # when the blocks differ), which scores as the zeroed model did.
        out = os.path.join(args.work, f"{label}_neurons_heads.gguf")
        report = out + ".json"
        cmd = [args.prune, "--model", model, "--calib", args.calib, "--eval", args.eval, "--method", "llm-surgeon",
               "--structure", "neurons-heads", "--density", density, "--shots", shots, "--nsamples", str(nsamples),
               "--seqlen", str(seqlen), "--eval-windows", str(windows), "--out", out, "--report", report]
        run(cmd + (["--tokenizer", tokenizer] if tokenizer else []))
        with open(report) as f:
            r = json.load(f)
        compacted = r["compacted"]
        if not compacted["parameters_after"] < compacted["parameters_before"]:
            fail(f"{label}: neurons-heads cut nothing out")
        relative = abs(compacted["ppl_compacted"] - r["ppl_pruned"]) / r["ppl_pruned"]
        print(f"  {label} neurons-heads: parameters {compacted['parameters_before']} -> "
              f"{compacted['parameters_after']}, pruned {r['ppl_pruned']:.6f} compacted "
              f"{compacted['ppl_compacted']:.6f} relative {relative:.2e} (tolerance 1e-4)", flush=True)
        if relative > 1e-4:
            fail(f"{label}: cutting the units out changed the perplexity by {relative:.2e}")
        compare(out, tokenizer, seqlen, windows, 1e-3, f"{label} neurons-heads f16")
        generate(out, f"{label} neurons-heads")

    check_compaction(args.model, args.tokenizer, 128, 8, "stories260K")
    check_units(args.model, args.tokenizer, 128, 8, 8, "0.7", "2", "stories260K")
    check_model(args.model, args.tokenizer, 128, 8, 8, "llm-surgeon", "stories260K")
    if args.smollm2 and os.path.exists(args.smollm2):
        # Magnitude: the file formats are what is checked here, and it needs no calibration pass.
        # A model that is still a language model (LLM Surgeon, 10 %, one shot): a destroyed one
        # (magnitude's, perplexity 10⁵) magnifies F16 rounding beyond any fixed tolerance.
        check_units(args.smollm2, "", 256, 4, 4, "0.9", "1", "SmolLM2")
        check_model(args.smollm2, "", 256, 4, 4, "magnitude", "SmolLM2")
    else:
        print("  SmolLM2: not given or not cached, not checked")
    print("llama.cpp checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
