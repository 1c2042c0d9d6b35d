#!/usr/bin/env python3
"""Reference byte-level BPE tokenizer for surgeon's SmolLM2 parity test (tests/llama/test_llama_io.cpp).

Builds a Hugging Face `tokenizers` tokenizer from the tokenizer metadata of a GGUF file (read with
the `gguf` package) and writes two text files that the C++ test reads when they exist:

  <out>/surgeon_smollm2_vocab.txt   pre-tokenizer name, bos/eos ids, add_bos, tokens (with their
                                    GGUF token type) and merges, one per line, escaped
  <out>/surgeon_smollm2_cases.txt   test strings (the first 50 KB of wikitext-2 test.txt and some
                                    tricky strings) with the token ids HF tokenizers gives them

Escaping (one item per line): backslash -> "\\\\", and every byte below 0x20 or 0x7F as "\\xNN"; all
other bytes (UTF-8 included) are written as they are.

Only the pre-tokenizers surgeon implements are reproduced: "gpt2" (ByteLevel with the GPT-2 regex)
and "smollm" (Digits(individual_digits) then ByteLevel), both without a prefix space. Special
tokens are not parsed (the C++ default), so the strings must not contain them.

Usage (never install these packages into the repository; use a throw-away virtual environment):
  python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install gguf tokenizers
  /tmp/tokvenv/bin/python tests/llama/tokenizer_reference.py \
      --gguf ~/.cache/surgeon/SmolLM2-135M-Instruct.Q4_1.gguf \
      --wikitext ../shared/data/wikitext-2/test.txt --out /tmp
"""
import argparse
import os
import sys

TRICKY = [
    "Once upon a time",
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    " \n \n  x",
    "Hello world! 12345 and 3.14159, 1,000,000 or 2024-01-01.",
    "I'm you're we've they'll she'd it's don't I'M YOU'RE 'S 'sa",
    "tabs\tand\t\ttabs \t mixed",
    "multiple     spaces    here  ",
    "trailing spaces   ",
    "   leading spaces",
    "caf\u00e9 na\u00efve \u00fcber \u00c5ngstr\u00f6m \u0153uvre",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \u4e2d\u6587 \ud55c\uad6d\uc5b4",
    "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "emoji \U0001F600\U0001F680 and \u2764\ufe0f family \U0001F468\u200d\U0001F469\u200d\U0001F467",
    "arabic digits \u0661\u0662\u0663 roman \u2167 superscript x\u00b2 fraction \u00bd",
    "nbsp\u00a0here and\u2003em space and\u3000ideographic",
    "punctuation!!! ??? ... --- *** ((( ))) [[ ]] {{ }} @@ ## $$ %% ^^ && __",
    "<|endoftext|> is not parsed as special here",
    "code: def f(x):\n    return x ** 2  # square\n\tpass\r\n",
    "mixed123abc456def 7up 99bottles",
    " = Robert Boulter = \n \n Robert Boulter is an English film , television and theatre actor . \n",
]


def escape(data: bytes) -> str:
    out = bytearray()
    for b in data:
        if b == 0x5C:
            out += b"\\\\"
        elif b < 0x20 or b == 0x7F:
            out += b"\\x%02X" % b
        else:
            out.append(b)
    return out.decode("utf-8", errors="surrogateescape")


def field_value(reader, key):
    field = reader.fields[key]
    part = field.parts[field.data[0]]
    if key.endswith(".pre") or key.endswith(".model"):
        return bytes(part).decode("utf-8")
    return part[0].item()


def field_strings(reader, key):
    field = reader.fields[key]
    return [bytes(field.parts[i]) for i in field.data]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=os.path.expanduser("~/.cache/surgeon/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--wikitext", required=True, help="wikitext-2 test.txt")
    ap.add_argument("--out", default="/tmp")
    ap.add_argument("--prefix-bytes", type=int, default=50 * 1024)
    args = ap.parse_args()

    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    reader = GGUFReader(args.gguf)
    model = field_value(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        sys.exit(f"tokenizer.ggml.model is {model!r}, not 'gpt2' (byte-level BPE)")
    pre = field_value(reader, "tokenizer.ggml.pre")
    tokens = field_strings(reader, "tokenizer.ggml.tokens")
    merges = field_strings(reader, "tokenizer.ggml.merges")
    type_field = reader.fields["tokenizer.ggml.token_type"]
    types = [int(type_field.parts[i][0]) for i in type_field.data]
    bos = field_value(reader, "tokenizer.ggml.bos_token_id") if "tokenizer.ggml.bos_token_id" in reader.fields else -1
    eos = field_value(reader, "tokenizer.ggml.eos_token_id") if "tokenizer.ggml.eos_token_id" in reader.fields else -1
    add_bos = (
        bool(field_value(reader, "tokenizer.ggml.add_bos_token"))
        if "tokenizer.ggml.add_bos_token" in reader.fields
        else False
    )
    if len(set(tokens)) != len(tokens):
        sys.exit("duplicate token strings: the HF vocabulary would not match the GGUF ids")

    vocab = {t.decode("utf-8"): i for i, t in enumerate(tokens)}
    pairs = [tuple(m.decode("utf-8").split(" ", 1)) for m in merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "gpt2":
        tk.pre_tokenizer = byte_level
    elif pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        sys.exit(f"pre-tokenizer {pre!r} not reproduced by this script")
    tk.decoder = decoders.ByteLevel()

    with open(os.path.join(args.out, "surgeon_smollm2_vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(f"pre {pre}\nbos {bos}\neos {eos}\nadd_bos {int(add_bos)}\n")
        f.write(f"tokens {len(tokens)}\n")
        for t, ty in zip(tokens, types):
            f.write(f"{ty} {escape(t)}\n")
        f.write(f"merges {len(merges)}\n")
        for m in merges:
            f.write(escape(m) + "\n")

    with open(args.wikitext, "rb") as f:
        data = f.read(args.prefix_bytes)
    while data and (data[-1] & 0xC0) == 0x80:
        data = data[:-1]
    if data and data[-1] >= 0xC0:
        data = data[:-1]
    cases = TRICKY + [data.decode("utf-8")]
    n_tokens = 0
    with open(os.path.join(args.out, "surgeon_smollm2_cases.txt"), "w", encoding="utf-8", newline="\n") as f:
        for text in cases:
            ids = tk.encode(text, add_special_tokens=False).ids
            assert tk.decode(ids) == text or text == "", (text, tk.decode(ids))
            n_tokens += len(ids)
            f.write("case " + escape(text.encode("utf-8")) + "\n")
            f.write("ids" + "".join(f" {i}" for i in ids) + "\n")
    print(f"pre={pre} tokens={len(tokens)} merges={len(merges)} bos={bos} eos={eos} add_bos={add_bos} "
          f"types={sorted(set(types))} cases={len(cases)} ids={n_tokens}")


if __name__ == "__main__":
    main()
