#!/usr/bin/env python3
"""Writes a GGUF file of random quantised blocks and their dequantisation by gguf-py.

gguf-py (llama.cpp's own Python GGUF library, `scripts/fetch-gguf-py.sh`) is the independent
reference for surgeon's dequantisation and quantisation: for every quantised type surgeon reads,
this script draws random blocks (every quant bit pattern; the F16 scales and minimums finite),
stores them as the tensor `q.<TYPE>` with that type, and stores `gguf.quants.dequantize` of them
as the F32 tensor `ref.<TYPE>`; for every type surgeon writes, it stores random floats `in.f32`
(with exact zeros, as a pruned matrix has) and `gguf.quants.quantize` of them as `out.<TYPE>`.
The file is written by gguf-py's own GGUFWriter, so reading it also checks surgeon's reader
against an independent writer. test_gguf "[reference]" compares bit for bit.

    gguf_reference.py --wheel gguf-0.17.1-py3-none-any.whl --out reference.gguf [--seed S]

Exits 77 (skipped) when numpy or the wheel cannot be imported.
"""
import argparse
import sys

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
WRITTEN = ["F16", "BF16", "Q8_0"]
ROWS = 6  # rows of each tensor; each row is a few blocks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="the gguf-py wheel (pure Python, imported from the zip)")
    parser.add_argument("--out", required=True, help="the GGUF file to write")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, args.wheel)
    try:
        import numpy as np
        import gguf
    except ImportError as error:
        print(f"gguf_reference: skipped ({error})", file=sys.stderr)
        return 77

    rng = np.random.default_rng(args.seed)
    writer = gguf.GGUFWriter(args.out, "surgeon-dequantize-reference")
    for name in TYPES:
        qtype = gguf.GGMLQuantizationType[name]
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        blocks_per_row = 3 if block_size == 256 else 5
        cols = blocks_per_row * block_size
        raw = rng.integers(0, 256, size=(ROWS * blocks_per_row, type_size), dtype=np.uint8)
        # Every F16 field (scales d, minimums) finite and of a realistic size, with both signs:
        # random bytes would also give infinities and NaNs, which compare unequal to themselves.
        for offset in f16_offsets(name, type_size):
            values = rng.uniform(-2.0, 2.0, size=raw.shape[0]).astype(np.float16)
            raw[:, offset:offset + 2] = values.view(np.uint8).reshape(-1, 2)
        raw = raw.reshape(ROWS, blocks_per_row * type_size)
        expected = gguf.quants.dequantize(raw, qtype).astype(np.float32)
        assert expected.shape == (ROWS, cols), (name, expected.shape)
        writer.add_tensor(f"q.{name}", raw, raw_dtype=qtype)  # shape from the bytes
        writer.add_tensor(f"ref.{name}", expected)
    floats = rng.standard_normal(size=(ROWS, 5 * 32)).astype(np.float32) * np.float32(0.05)
    floats[rng.random(floats.shape) < 0.5] = 0.0  # half pruned, as surgeon writes them
    floats[0, :32] = 0.0                          # a block of zeros (Q8_0 scale 0)
    writer.add_tensor("in.f32", floats)
    for name in WRITTEN:
        qtype = gguf.GGMLQuantizationType[name]
        writer.add_tensor(f"out.{name}", gguf.quants.quantize(floats, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return 0


def f16_offsets(name: str, type_size: int) -> list:
    """Byte offsets of the F16 fields of one block of `name` (ggml-common.h)."""
    return {
        "Q4_0": [0],
        "Q4_1": [0, 2],
        "Q5_0": [0],
        "Q5_1": [0, 2],
        "Q8_0": [0],
        "Q2_K": [type_size - 4, type_size - 2],  # d, dmin after scales and quants
        "Q3_K": [type_size - 2],                 # d last
        "Q4_K": [0, 2],                          # d, dmin first
        "Q5_K": [0, 2],
        "Q6_K": [type_size - 2],                 # d last
    }[name]


if __name__ == "__main__":
    sys.exit(main())
