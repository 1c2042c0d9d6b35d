#!/usr/bin/env python3
"""Converts a llama2.c checkpoint to a GGUF llama model (F32) with gguf-py, llama.cpp's own Python
GGUF library: an independent writer of the GGUF files that surgeon reads, prunes and writes back.

    llama2c_to_gguf.py --wheel gguf-0.17.1-py3-none-any.whl --model stories260K.bin
                       --tokenizer tok512.bin --out model.gguf

The llama2.c layout (Meta's, with interleaved RoPE pairs) is the one llama.cpp's GGUF "llama"
architecture uses, so the matrices are copied as they are. The llama2.c tokenizer is stored as a
SentencePiece ("llama") vocabulary, as llama.cpp's own convert-llama2c does, so that llama.cpp can
load the file; surgeon's tools read it with `--tokenizer tok512.bin`. Exits 77 (skipped) when
numpy, the wheel or an input cannot be read.
"""
import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for path in [args.model, args.tokenizer]:
        if not os.path.isfile(path):
            print(f"llama2c_to_gguf: skipped ({path} absent)", file=sys.stderr)
            return 77
    sys.path.insert(0, args.wheel)
    try:
        import numpy as np
        import gguf
    except ImportError as error:
        print(f"llama2c_to_gguf: skipped ({error})", file=sys.stderr)
        return 77

    with open(args.model, "rb") as f:
        data = f.read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = np.frombuffer(data[:28], dtype=np.int32)
    shared = vocab > 0
    vocab = abs(int(vocab))
    head_dim = dim // heads
    kv_dim = head_dim * kv_heads
    floats = np.frombuffer(data[28:], dtype=np.float32)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = floats[pos:pos + n].reshape(shape)
        pos += n
        return out

    token_embd = take(vocab, dim)
    rms_att = take(layers, dim)
    wq = take(layers, dim, dim)
    wk = take(layers, kv_dim, dim)
    wv = take(layers, kv_dim, dim)
    wo = take(layers, dim, dim)
    rms_ffn = take(layers, dim)
    w1 = take(layers, hidden, dim)
    w2 = take(layers, dim, hidden)
    w3 = take(layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, head_dim // 2)  # freq_cis_real (unused: RoPE is recomputed)
    take(seq_len, head_dim // 2)  # freq_cis_imag
    output = None if shared else take(vocab, dim)

    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name(os.path.splitext(os.path.basename(args.model))[0])
    writer.add_context_length(int(seq_len))
    writer.add_embedding_length(int(dim))
    writer.add_feed_forward_length(int(hidden))
    writer.add_block_count(int(layers))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(kv_heads))
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # ALL_F32
    tokens, scores, types = read_llama2c_vocab(args.tokenizer, vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_tensor("token_embd.weight", np.ascontiguousarray(token_embd))
    writer.add_tensor("output_norm.weight", np.ascontiguousarray(rms_final))
    if output is not None:
        writer.add_tensor("output.weight", np.ascontiguousarray(output))
    for layer in range(int(layers)):
        for name, array in [("attn_norm", rms_att), ("attn_q", wq), ("attn_k", wk), ("attn_v", wv),
                            ("attn_output", wo), ("ffn_norm", rms_ffn), ("ffn_gate", w1), ("ffn_down", w2),
                            ("ffn_up", w3)]:
            writer.add_tensor(f"blk.{layer}.{name}.weight", np.ascontiguousarray(array[layer]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return 0


def read_llama2c_vocab(path: str, vocab: int):
    """The pieces, scores and llama.cpp token types of a llama2.c tokenizer file, with its pieces as
    SentencePiece spells them (llama2.c's export turned '▁' into ' ' and wrapped BOS/EOS in newlines)."""
    import struct
    with open(path, "rb") as f:
        data = f.read()
    pos = 4  # max_token_length
    tokens, scores, types = [], [], []
    for i in range(vocab):
        score, length = struct.unpack_from("<fi", data, pos)
        pos += 8
        piece = data[pos:pos + length].decode("utf-8", errors="replace")
        pos += length
        if i == 0:
            piece, kind = "<unk>", 2  # UNKNOWN
        elif i in (1, 2):
            piece, kind = ("<s>", "</s>")[i - 1], 3  # CONTROL
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            kind = 6  # BYTE
        else:
            piece, kind = piece.replace(" ", "\u2581"), 1  # NORMAL
        tokens.append(piece)
        scores.append(score)
        types.append(kind)
    return tokens, scores, types


if __name__ == "__main__":
    sys.exit(main())
