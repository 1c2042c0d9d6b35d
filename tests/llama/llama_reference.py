#!/usr/bin/env python3
"""PyTorch reference for surgeon's Llama runtime (tests only).

Loads a llama2.c checkpoint, runs a fixed batch forward and backward in float64 and float32, and
writes to a safetensors file: the tokens, the logits, the mean next-token loss, and for every linear
layer its input and the gradient of the mean loss at its output. Independent of surgeon's code:
the model is written here from the architecture's definition.

It also runs the model with a masked low-rank adapter on every linear layer (the first-order
correction, surgeon/first_order.hpp): weight = W * M + M * (B @ A), with a seeded random mask M
(about half the weights pruned) and seeded random B [out, 4], A [4, in]; it writes "lora.loss" and,
per layer, "lora.<name>.mask" (1 = kept), ".b", ".a" (float32, as used) and ".grad_b", ".grad_a"
(autograd's gradients of the mean loss, float64).

usage: llama_reference.py --model stories260K.bin --out ref.safetensors [--batch 2 --seq 24 --seed 7]
Exits 77 (skip) when torch is not importable.
"""
import argparse
import json
import os
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError as error:  # pragma: no cover
    print(f"llama_reference: {error}: skipping", file=sys.stderr)
    sys.exit(77)


def read_llama2c(path):
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    values = np.frombuffer(data, dtype="<f4", offset=28)
    head_dim = dim // heads
    kv_dim = head_dim * kv_heads
    shapes = [
        ("tok_embeddings", (vocab, dim)),
        ("rms_att", (layers, dim)),
        ("wq", (layers, dim, dim)),
        ("wk", (layers, kv_dim, dim)),
        ("wv", (layers, kv_dim, dim)),
        ("wo", (layers, dim, dim)),
        ("rms_ffn", (layers, dim)),
        ("w1", (layers, hidden, dim)),
        ("w2", (layers, dim, hidden)),
        ("w3", (layers, hidden, dim)),
        ("rms_final", (dim,)),
        ("freq_cis_real", (seq_len, head_dim // 2)),
        ("freq_cis_imag", (seq_len, head_dim // 2)),
    ]
    if not shared:
        shapes.append(("wcls", (vocab, dim)))
    weights, offset = {}, 0
    for name, shape in shapes:
        count = int(np.prod(shape))
        weights[name] = values[offset:offset + count].reshape(shape).copy()
        offset += count
    assert offset == values.size, "checkpoint size mismatch"
    config = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, shared=shared)
    return config, weights


def rms_norm(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x, theta=10000.0):
    # x: [batch, seq, heads, head_dim]; rotates adjacent pairs (2i, 2i+1) as llama2.c does.
    _, seq, _, head_dim = x.shape
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * freqs[None, :]
    cos = torch.cos(angles).to(x.dtype)[None, :, None, :]
    sin = torch.sin(angles).to(x.dtype)[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def run(config, weights, tokens, dtype, weight_grads=True, adapt=None):
    """Forward + backward of the mean next-token loss. With weight_grads=False only the activations
    are differentiated (what K-FAC needs), not the weights. adapt(name, weight), when given, returns
    the weight a linear layer uses."""
    w = {k: v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=dtype, requires_grad=weight_grads)
         for k, v in weights.items()}
    eps = config.get("eps", 1e-5)
    theta = config.get("rope_theta", 10000.0)
    batch, seq = tokens.shape
    dim, heads, kv_heads = config["dim"], config["heads"], config["kv_heads"]
    head_dim = dim // heads
    captured = {}

    def linear(name, x, weight):
        if adapt is not None:
            weight = adapt(name, weight)
        x_leaf = x
        y = x_leaf @ weight.T
        y.retain_grad()
        captured[name] = (x_leaf, y)
        return y

    x = w["tok_embeddings"][torch.tensor(tokens, dtype=torch.long)]
    if not weight_grads:
        x = x.detach().requires_grad_(True)
    mask = torch.full((seq, seq), float("-inf"), dtype=dtype).triu(1)
    for layer in range(config["layers"]):
        prefix = f"blk.{layer}."
        h = rms_norm(x, w["rms_att"][layer], eps)
        q = linear(prefix + "attn_q", h, w["wq"][layer]).view(batch, seq, heads, head_dim)
        k = linear(prefix + "attn_k", h, w["wk"][layer]).view(batch, seq, kv_heads, head_dim)
        v = linear(prefix + "attn_v", h, w["wv"][layer]).view(batch, seq, kv_heads, head_dim)
        q, k = rope(q, theta), rope(k, theta)
        repeat = heads // kv_heads
        k = k.repeat_interleave(repeat, dim=2)
        v = v.repeat_interleave(repeat, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [batch, heads, seq, head_dim]
        scores = q @ k.transpose(-1, -2) / (head_dim ** 0.5) + mask
        o = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, seq, dim)
        x = x + linear(prefix + "attn_output", o, w["wo"][layer])
        h = rms_norm(x, w["rms_ffn"][layer], eps)
        gate = linear(prefix + "ffn_gate", h, w["w1"][layer])
        up = linear(prefix + "ffn_up", h, w["w3"][layer])
        x = x + linear(prefix + "ffn_down", torch.nn.functional.silu(gate) * up, w["w2"][layer])
    x = rms_norm(x, w["rms_final"], eps)
    classifier = w["tok_embeddings"] if config["shared"] else w["wcls"]
    logits = x @ classifier.T
    targets = torch.tensor(tokens[:, 1:], dtype=torch.long)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, config["vocab"]), targets.reshape(-1))
    loss.backward()
    result = {"logits": logits.detach().reshape(batch * seq, -1), "loss": loss.detach().reshape(1)}
    for name, (inp, out) in captured.items():
        result[name + ".input"] = inp.detach().reshape(batch * seq, -1)
        result[name + ".output_grad"] = out.grad.detach().reshape(batch * seq, -1)
    return result


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        dtype = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("int32"): "I32"}[array.dtype]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not os.path.exists(args.model):
        print(f"llama_reference: {args.model} is absent: skipping", file=sys.stderr)
        sys.exit(77)
    config, weights = read_llama2c(args.model)
    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(0, config["vocab"], size=(args.batch, args.seq), dtype=np.int32)
    # float64 is the reference; surgeon computes in float32 and is compared to it.
    result = run(config, weights, tokens, torch.float64)
    tensors = {"tokens": tokens.reshape(-1)}
    tensors.update({name: value.numpy() for name, value in result.items()})
    # The masked low-rank adapters: weights masked and fixed, B and A trained.
    rank, adapters = 4, {}
    lora_rng = np.random.default_rng(args.seed + 1)

    def adapt(name, weight):
        if name not in adapters:
            out_dim, in_dim = weight.shape
            keep = (lora_rng.random((out_dim, in_dim)) >= 0.5).astype(np.float32)
            b = lora_rng.normal(0.0, 0.05, (out_dim, rank)).astype(np.float32)
            a = lora_rng.normal(0.0, 0.2, (rank, in_dim)).astype(np.float32)
            adapters[name] = {
                "mask": keep, "b": b, "a": a,
                "tb": torch.tensor(b, dtype=torch.float64, requires_grad=True),
                "ta": torch.tensor(a, dtype=torch.float64, requires_grad=True),
            }
        entry = adapters[name]
        keep = torch.tensor(entry["mask"], dtype=torch.float64)
        return weight.detach() * keep + keep * (entry["tb"] @ entry["ta"])

    lora = run(config, weights, tokens, torch.float64, weight_grads=False, adapt=adapt)
    tensors["lora.loss"] = lora["loss"].numpy()
    for name, entry in adapters.items():
        tensors[f"lora.{name}.mask"] = entry["mask"]
        tensors[f"lora.{name}.b"] = entry["b"]
        tensors[f"lora.{name}.a"] = entry["a"]
        tensors[f"lora.{name}.grad_b"] = entry["tb"].grad.numpy()
        tensors[f"lora.{name}.grad_a"] = entry["ta"].grad.numpy()
    write_safetensors(args.out, tensors)
    print(f"llama_reference: wrote {len(tensors)} tensors, loss={result['loss'].item():.6f}, "
          f"with adapters {lora['loss'].item():.6f}")


if __name__ == "__main__":
    main()
