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

    llama_cpp_check.py --llama-cpp BUILD --wheel W --model M.gguf --tokenizer TOK --calib C --eval E
                       --prune surgeon-prune --ppl surgeon-ppl --test-gguf test_gguf --work DIR
                       [--smollm2 PATH]

Exits 77 (skipped) when llama.cpp's build, the wheel or an input is absent.
"""
import argparse
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

    check_model(args.model, args.tokenizer, 128, 8, 8, "llm-surgeon", "stories260K")
    if args.smollm2 and os.path.exists(args.smollm2):
        # Magnitude: the file formats are what is checked here, and it needs no calibration pass.
        check_model(args.smollm2, "", 256, 4, 4, "magnitude", "SmolLM2")
    else:
        print("  SmolLM2: not given or not cached, not checked")
    print("llama.cpp checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
