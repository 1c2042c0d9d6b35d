#!/usr/bin/env python3
"""PyTorch side of benchmarks/smollm2.sh: the same Llama model as tests/llama/llama_reference.py,
loaded from a GGUF file (dequantised by the `gguf` package), to compare with surgeon's runtime.

  llama_torch.py --gguf M.gguf --compare cpp.safetensors   # logits, loss, layer inputs/gradients
  llama_torch.py --gguf M.gguf --bench --batch 4 --seq 512 --repeat 3 --tokens cpp.safetensors
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "llama"))
import llama_reference  # noqa: E402


def load_gguf(path):
    import gguf

    reader = gguf.GGUFReader(path)

    def field(key):
        f = reader.fields[key]
        value = f.parts[f.data[0]]
        return value.tobytes().decode() if f.types[0] == gguf.GGUFValueType.STRING else value[0].item()

    tensors = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = [int(n) for n in reversed(t.shape.tolist())]
        tensors[t.name] = np.asarray(data, dtype=np.float32).reshape(shape)
    layers = int(field("llama.block_count"))
    config = dict(
        dim=int(field("llama.embedding_length")),
        hidden=int(field("llama.feed_forward_length")),
        layers=layers,
        heads=int(field("llama.attention.head_count")),
        kv_heads=int(field("llama.attention.head_count_kv")),
        vocab=tensors["token_embd.weight"].shape[0],
        shared="output.weight" not in tensors,
        rope_theta=float(field("llama.rope.freq_base")),
        eps=float(field("llama.attention.layer_norm_rms_epsilon")),
    )

    def stack(name):
        return np.stack([tensors[f"blk.{l}.{name}.weight"] for l in range(layers)])

    weights = dict(
        tok_embeddings=tensors["token_embd.weight"],
        rms_att=stack("attn_norm"), wq=stack("attn_q"), wk=stack("attn_k"), wv=stack("attn_v"),
        wo=stack("attn_output"), rms_ffn=stack("ffn_norm"), w1=stack("ffn_gate"), w2=stack("ffn_down"),
        w3=stack("ffn_up"), rms_final=tensors["output_norm.weight"],
    )
    if not config["shared"]:
        weights["wcls"] = tensors["output.weight"]
    return config, weights


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    base = 8 + length
    dtypes = {"F32": np.float32, "F64": np.float64, "I32": np.int32}
    result = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        result[name] = np.frombuffer(data[base + begin:base + end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return result


def relative(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--compare")
    parser.add_argument("--tokens")
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, weights = load_gguf(args.gguf)
    if args.compare:
        cpp = read_safetensors(args.compare)
        seq = args.seq
        tokens = cpp["tokens"].reshape(-1, seq)
        result = run64 = llama_reference.run(config, weights, tokens, torch.float64)
        worst = 0.0
        lines = [f"loss torch={run64['loss'].item():.9f} surgeon={cpp['loss'][0]:.9f}",
                 f"logits rel_diff={relative(cpp['logits'], result['logits'].numpy()):.3e}"]
        worst = max(worst, relative(cpp["logits"], result["logits"].numpy()))
        for name in sorted(cpp):
            if name.endswith(".output_grad"):
                layer = name[: -len(".output_grad")]
                d = relative(cpp[name], result[layer + ".output_grad"].numpy())
                worst = max(worst, d)
                lines.append(f"{name} rel_diff={d:.3e}")
            elif name.endswith(".input"):
                key = name[: -len(".input")]
                block, kind = key.split(".")[1], key.split(".")[2]
                layer = {"attn_in": "attn_q", "attn_output_in": "attn_output", "ffn_in": "ffn_gate",
                         "ffn_down_in": "ffn_down"}[kind]
                d = relative(cpp[name], result[f"blk.{block}.{layer}.input"].numpy())
                worst = max(worst, d)
                lines.append(f"{name} rel_diff={d:.3e}")
        print("\n".join(lines))
        print(f"parity_worst_rel_diff={worst:.3e}")
    if args.bench:
        rng = np.random.default_rng(0)
        tokens = (read_safetensors(args.tokens)["tokens"][: args.batch * args.seq].reshape(args.batch, args.seq)
                  if args.tokens else rng.integers(0, config["vocab"], size=(args.batch, args.seq)))
        for weight_grads in (False, True):
            prepared = {k: torch.tensor(v, dtype=torch.float32, requires_grad=weight_grads) for k, v in weights.items()}
            best = float("inf")
            for _ in range(args.repeat):
                for value in prepared.values():
                    value.grad = None
                start = time.perf_counter()
                llama_reference.run(config, prepared, tokens, torch.float32, weight_grads=weight_grads)
                best = min(best, time.perf_counter() - start)
            label = "with_weight_grads" if weight_grads else "activation_grads"
            print(f"torch {label} batch={args.batch} seq={args.seq} best_seconds={best:.3f} "
                  f"fwd_bwd_tokens_per_s={args.batch * args.seq / best:.1f} threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
