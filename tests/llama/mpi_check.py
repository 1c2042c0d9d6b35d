#!/usr/bin/env python3
"""surgeon-prune over several MPI processes on stories260K (METHOD.md §10), run by ctest.

    mpi_check.py --prune BIN --mpirun BIN --shared DIR --work DIR [--gguf FILE] [CASE ...]

Cases (all of them when none is named):
  configs   every method x structure (and the sequential, one-pass, grouped and first-order
            variants) run by `mpirun -np K` for K = 1, 2, 3: against K = 1 the written file has the
            same zeros, the report the same ppl_pruned (1e-6 relative) and pruned_weights, and
            "processes" == K with K positive entries in "peak_rss_mb_per_process"; only process 0
            prints to stdout; no <out>.tmp.* is left. The combinations the tool refuses for K = 1
            (exit 2, or exit 1 with its message) are printed "refused" and skipped; the ones every
            build must run (REQUIRED) fail the test when refused. neurons-heads needs a GGUF model:
            --gguf (the stories260K_gguf fixture's file, read with --out-type f32); without it those
            runs are skipped with a line saying so.
  kill      rank 1 of a long `mpirun -np 2` run is killed (SIGKILL) after process 0 printed
            "shot 1/": mpirun ends non-zero within 30 s and says so, neither --out nor <out>.tmp.*
            exists and no process of the run is left.
  bad-flag  a bad flag (--density 1.5) under mpirun: non-zero exit with the tool's message, nothing
            written.

Exit 77 (skipped) when ../shared lacks the model or the texts.
"""
import argparse
import glob
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

import numpy as np

COMMON = ["--nsamples", "8", "--seqlen", "64", "--eval-windows", "8", "--shots", "2", "--update-threads", "1"]
PROCESSES = (1, 2, 3)
METHODS = ["magnitude", "wanda", "kobd", "lobd", "sparsegpt", "llm-surgeon"]
STRUCTURES = ["unstructured", "2:4", "rows-cols", "neurons-heads"]
# Each pair (method, structure) that has to run; the others may be refused.
REQUIRED = {(m, s) for m in METHODS for s in ("unstructured", "2:4")} | \
           {(m, "rows-cols") for m in ("llm-surgeon", "kobd", "magnitude")} | {("llm-surgeon", "neurons-heads")}
# Variants on top of the method x structure table. --sequential is already the default of
# sparsegpt, wanda and llm-surgeon's element masks; --one-pass runs the other calibration.
EXTRAS = [  # (name, flags, what the report must say the run did)
    ("llm-surgeon unstructured --sequential", ["--method", "llm-surgeon", "--sequential"], {"sequential": True}),
    ("sparsegpt unstructured --sequential", ["--method", "sparsegpt", "--sequential"], {"sequential": True}),
    ("wanda unstructured --sequential", ["--method", "wanda", "--sequential"], {"sequential": True}),
    ("llm-surgeon unstructured --one-pass", ["--method", "llm-surgeon", "--one-pass"], {"sequential": False}),
    ("sparsegpt unstructured --one-pass", ["--method", "sparsegpt", "--one-pass"], {"sequential": False}),
    ("wanda unstructured --one-pass", ["--method", "wanda", "--one-pass"], {"sequential": False}),
    ("llm-surgeon unstructured --group-size 3", ["--method", "llm-surgeon", "--group-size", "3"],
     {"group_size": 3}),  # 35 matrices: 12 groups
    ("llm-surgeon 2:4 --first-order", ["--method", "llm-surgeon", "--structure", "2:4", "--first-order",
                                       "--first-order-steps", "1", "--first-order-final-steps", "2"],
     {"first_order": "set"}),
]
RUN_TIMEOUT = 180  # seconds, one mpirun of the configs case
KILL_SHOTS = "60"  # the killed run: ~15 s for K = 2 on 2 cores when left alone


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def say(message):
    print(message, flush=True)


# ---- the written files ---------------------------------------------------------------------------

def llama2c_floats(path):
    """A llama2.c checkpoint: its 7-int32 header and every float after it."""
    with open(path, "rb") as f:
        header = f.read(28)
    return header, np.fromfile(path, dtype=np.float32, offset=28)


GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_FLOATS = {0: np.float32, 1: np.float16}  # the element types compared value by value


def read_gguf(path):
    """A GGUF file: name -> (shape, element type, values (float types) or raw bytes)."""
    data = memoryview(open(path, "rb").read())
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string():
        nonlocal pos
        n = take("Q")
        text = bytes(data[pos:pos + n]).decode("utf-8")
        pos += n
        return text

    def value(kind):
        if kind == 8:
            return string()
        if kind == 9:
            inner, n = take("I"), take("Q")
            return [value(inner) for _ in range(n)]
        return take(GGUF_SCALARS[kind])

    if bytes(data[:4]) != b"GGUF":
        fail(f"{path}: not a GGUF file")
    pos = 4
    _version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        infos.append((name, dims, take("I"), take("Q")))
    align = meta.get("general.alignment", 32)
    start = (pos + align - 1) // align * align
    offsets = sorted(offset for *_, offset in infos) + [len(data) - start]
    tensors = {}
    for name, dims, kind, offset in infos:
        count = int(np.prod(dims))
        if kind in GGUF_FLOATS:
            values = np.frombuffer(data, dtype=GGUF_FLOATS[kind], count=count, offset=start + offset)
        else:  # raw bytes up to the next tensor
            end = min(o for o in offsets if o > offset)
            values = np.frombuffer(data[start + offset:start + end], dtype=np.uint8)
        tensors[name] = (tuple(dims), kind, values)
    return meta, tensors


def compare_files(path, base, gguf):
    """Zero masks identical (else fail); returns (differing weights, compared weights)."""
    if not gguf:
        h1, a = llama2c_floats(base)
        h2, b = llama2c_floats(path)
        if h1 != h2 or a.shape != b.shape:
            fail(f"{path}: header or size differs from {base}")
        if not np.array_equal(a == 0, b == 0):
            fail(f"{path}: {int(np.count_nonzero((a == 0) != (b == 0)))} zero positions differ from {base}")
        return int(np.count_nonzero(a != b)), a.size
    _, ta = read_gguf(base)
    _, tb = read_gguf(path)
    if sorted(ta) != sorted(tb):
        fail(f"{path}: tensors {sorted(set(ta) ^ set(tb))} not in both files")
    differ = total = 0
    for name, (shape, kind, a) in ta.items():
        shape_b, kind_b, b = tb[name]
        if (shape, kind) != (shape_b, kind_b) or a.shape != b.shape:
            fail(f"{path}: {name} is {shape_b} type {kind_b}, K=1 wrote {shape} type {kind}")
        if kind not in GGUF_FLOATS:
            fail(f"{name}: element type {kind}, expected f32 or f16 (--out-type f32)")
        if not np.array_equal(a == 0, b == 0):
            fail(f"{path}: {name}: {int(np.count_nonzero((a == 0) != (b == 0)))} zero positions differ from {base}")
        differ += int(np.count_nonzero(a != b))
        total += a.size
    return differ, total


# ---- running the tool ----------------------------------------------------------------------------

def remove(paths):
    for path in paths:
        if os.path.lexists(path):
            os.remove(path)


def mpirun(args, k):
    return [args.mpirun, "-np", str(k), "--oversubscribe", args.prune]


def run(cmd, timeout=RUN_TIMEOUT):
    """Runs cmd in its own session: (exit status, stdout, stderr); a run past timeout fails."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        fail(f"{' '.join(cmd)}: still running after {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return p.returncode, out, err


def model_flags(args, structure):
    if structure == "neurons-heads":
        return ["--model", args.gguf, "--tokenizer", args.tokenizer, "--out-type", "f32"], ".gguf"
    return ["--model", args.model], ".bin"


def check_config(args, name, flags, required, expect=None):
    structure = flags[flags.index("--structure") + 1] if "--structure" in flags else "unstructured"
    if structure == "neurons-heads" and not args.gguf:
        say(f"{name}: skipped (no GGUF model: the stories260K_gguf fixture did not make {args.gguf_path!r})")
        return "skipped"
    model, ext = model_flags(args, structure)
    tag = name.replace(" ", "_").replace(":", "_").replace("--", "")
    base = None
    line = []
    for k in PROCESSES:
        out = os.path.join(args.work, f"{tag}.k{k}{ext}")
        report = os.path.join(args.work, f"{tag}.k{k}.json")
        remove([out, report] + glob.glob(out + ".tmp.*"))
        cmd = mpirun(args, k) + model + ["--calib", args.calib, "--eval", args.eval] + COMMON + flags + \
            ["--out", out, "--report", report]
        start = time.monotonic()
        rc, stdout, stderr = run(cmd)
        seconds = time.monotonic() - start
        if rc != 0:
            said = [l for l in (stdout + stderr).splitlines() if l.startswith("surgeon-prune:")]
            if k == 1 and rc in (1, 2) and said and not required:
                say(f"{name}: refused (K=1 exit {rc}: {said[0]})")
                return "refused"
            print("$ " + " ".join(cmd))
            print("stdout:\n" + stdout + "\nstderr:\n" + stderr)
            fail(f"{name}: K={k} exit {rc}")
        leftovers = glob.glob(out + ".tmp.*")
        if leftovers:
            fail(f"{name}: K={k} left {leftovers}")
        heads = [l for l in stdout.splitlines() if l.startswith("model=")]
        if len(heads) != 1:
            fail(f"{name}: K={k} stdout has {len(heads)} 'model=' lines, expected 1 (process 0 alone prints)")
        with open(report) as f:
            result = json.load(f)
        rss = result.get("peak_rss_mb_per_process")
        if result.get("processes") != k or not isinstance(rss, list) or len(rss) != k or not all(r > 0 for r in rss):
            fail(f"{name}: K={k} report has processes={result.get('processes')} "
                 f"peak_rss_mb_per_process={rss}")
        for shot in result["per_shot"]:
            if not shot["timings"].get("communication", -1) >= 0:
                fail(f"{name}: K={k} shot {shot['shot']} timings {shot['timings']} lack 'communication'")
        for key, wanted in (expect or {}).items():
            got = result.get(key)
            if (got is None) if wanted == "set" else (got != wanted):
                fail(f"{name}: K={k} report has {key}={got!r}, expected {wanted!r}")
        if base is None:
            base = (out, result)
            line.append(f"ppl={result['ppl_pruned']:.6f} pruned={result['pruned_weights']} K=1 {seconds:.1f}s")
            continue
        base_out, base_result = base
        differ, total = compare_files(out, base_out, structure == "neurons-heads")
        ppl, ppl1 = result["ppl_pruned"], base_result["ppl_pruned"]
        if abs(ppl - ppl1) > 1e-6 * abs(ppl1):
            fail(f"{name}: K={k} ppl_pruned {ppl!r}, K=1 {ppl1!r} (relative {abs(ppl - ppl1) / ppl1:.3g})")
        if result["pruned_weights"] != base_result["pruned_weights"]:
            fail(f"{name}: K={k} pruned_weights {result['pruned_weights']}, K=1 {base_result['pruned_weights']}")
        line.append(f"K={k} {seconds:.1f}s same zeros, {differ}/{total} weights differ, "
                    f"ppl rel {abs(ppl - ppl1) / ppl1:.1e}")
    say(f"{name}: " + "; ".join(line))
    return "ok"


def case_configs(args):
    configs = [(f"{m} {s}", ["--method", m, "--structure", s], (m, s) in REQUIRED, None)
               for m in METHODS for s in STRUCTURES]
    configs += [(name, flags, True, expect) for name, flags, expect in EXTRAS]
    outcomes = [check_config(args, *config) for config in configs]
    say(f"configs: {outcomes.count('ok')} agree for K = 1, 2, 3; {outcomes.count('refused')} refused, "
        f"{outcomes.count('skipped')} skipped")


# ---- a killed process ----------------------------------------------------------------------------

def process_table():
    """pid -> (parent pid, environ bytes or None) of every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
            if state == "Z":
                continue  # exited, not yet reaped
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                environ = None
            table[int(entry)] = (int(ppid), environ)
        except (OSError, ValueError):
            continue
    return table


def descendants(root, table):
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def case_kill(args):
    out = os.path.join(args.work, "killed.bin")
    remove([out] + glob.glob(out + ".tmp.*"))
    marker = "SURGEON_MPI_CHECK_RUN=" + uuid.uuid4().hex  # in the environment of every process of the run
    env = dict(os.environ, SURGEON_MPI_CHECK_RUN=marker.split("=", 1)[1])
    cmd = mpirun(args, 2) + ["--model", args.model, "--calib", args.calib, "--eval", args.eval] + COMMON[:6] + \
        ["--update-threads", "1", "--method", "llm-surgeon", "--shots", KILL_SHOTS, "--out", out]
    say("$ " + " ".join(cmd))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    lines = {"stdout": [], "stderr": []}
    first_shot = threading.Event()

    def read(name, stream):
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            lines[name].append(line)
            if name == "stderr" and line.startswith("shot 1/"):
                first_shot.set()

    readers = [threading.Thread(target=read, args=(n, getattr(p, n)), daemon=True) for n in lines]
    for r in readers:
        r.start()

    def ours():
        return {pid for pid, (_, environ) in process_table().items()
                if environ and marker.encode() in environ.split(b"\0")}

    try:
        deadline = time.monotonic() + 120
        while not first_shot.wait(0.05):
            if p.poll() is not None:
                fail(f"mpirun ended (exit {p.returncode}) before 'shot 1/': {lines}")
            if time.monotonic() > deadline:
                fail(f"no 'shot 1/' line within 120 s: {lines}")
        if p.poll() is not None:
            fail(f"mpirun ended (exit {p.returncode}) before the kill; the run is too short")
        table = process_table()
        below = descendants(p.pid, table)
        ranks = {pid: table[pid][1].split(b"\0") for pid in below
                 if table[pid][1] and marker.encode() in table[pid][1].split(b"\0")
                 and any(v.startswith(b"OMPI_COMM_WORLD_RANK=") for v in table[pid][1].split(b"\0"))}
        rank1 = [pid for pid, environ in ranks.items() if b"OMPI_COMM_WORLD_RANK=1" in environ]
        if len(ranks) != 2 or len(rank1) != 1:
            fail(f"found ranks {sorted(ranks)} under mpirun {p.pid}, rank 1 {rank1}; expected 2 and 1")
        seen = {n: len(v) for n, v in lines.items()}
        os.kill(rank1[0], signal.SIGKILL)
        killed = time.monotonic()
        say(f"kill: after process 0's first shot line, SIGKILL to rank 1 (pid {rank1[0]}; ranks {sorted(ranks)})")
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        elapsed = time.monotonic() - killed
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for r in readers:
        r.join(timeout=5)
    if rc is None:
        fail(f"mpirun still running 30 s after the kill; it said: {lines}")
    if rc == 0:
        fail("mpirun exited 0 after one of its processes was killed")
    said = lines["stderr"] + lines["stdout"]
    notes = [l for l in lines["stderr"][seen["stderr"]:] + lines["stdout"][seen["stdout"]:] if l.strip()]
    words = ("kill", "signal", "fail", "stopped", "abort", "terminat", "exited")
    if not any(w in l.lower() for l in notes for w in words):
        fail(f"mpirun exited {rc} but said nothing about the failure: {said}")
    say(f"kill: mpirun exited {rc} {elapsed:.1f} s after the kill; it said:")
    for l in notes[:14]:
        say("    | " + l)
    if len(notes) > 14:
        say(f"    | ... ({len(notes) - 14} more lines)")
    left = [f for f in [out] + glob.glob(out + ".tmp.*") if os.path.lexists(f)]
    if left:
        fail(f"the killed run left {left}")
    for _ in range(50):  # the ranks may take a moment to go once mpirun is gone
        alive = ours() | (set(ranks) & set(process_table()))
        if not alive:
            break
        time.sleep(0.1)
    else:
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        fail(f"processes of the killed run still running 5 s after mpirun ended: {sorted(alive)}")
    say("kill: no --out, no <out>.tmp.*, no process of the run left")


# ---- a bad flag ------------------------------------------------------------------------------------

def case_bad_flag(args):
    out = os.path.join(args.work, "bad.bin")
    report = os.path.join(args.work, "bad.json")
    remove([out, report] + glob.glob(out + ".tmp.*"))
    cmd = mpirun(args, 2) + ["--model", args.model, "--calib", args.calib, "--eval", args.eval] + COMMON + \
        ["--density", "1.5", "--out", out, "--report", report]
    rc, stdout, stderr = run(cmd, timeout=60)
    said = [l for l in (stdout + stderr).splitlines() if l.startswith("surgeon-prune:") and "density" in l]
    if rc == 0 or not said:
        fail(f"--density 1.5 under mpirun: exit {rc}, expected non-zero with the tool's message\n"
             f"stdout:\n{stdout}\nstderr:\n{stderr}")
    left = [f for f in [out, report] + glob.glob(out + ".tmp.*") if os.path.exists(f)]
    if left:
        fail(f"--density 1.5 under mpirun wrote {left}")
    say(f"bad-flag: --density 1.5 with -np 2 exits {rc}: {said[0]} ({len(said)} such lines); nothing written")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="*", default=["configs", "kill", "bad-flag"])
    parser.add_argument("--prune", required=True)
    parser.add_argument("--mpirun", required=True)
    parser.add_argument("--shared", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--gguf", default="", help="stories260K as GGUF, for neurons-heads")
    args = parser.parse_args()
    args.model = os.path.join(args.shared, "models", "stories260K", "stories260K.bin")
    args.tokenizer = os.path.join(args.shared, "models", "stories260K", "tok512.bin")
    args.calib = os.path.join(args.shared, "data", "wikitext-2", "valid.txt")
    args.eval = os.path.join(args.shared, "data", "wikitext-2", "test.txt")
    for path in (args.model, args.tokenizer, args.calib, args.eval):
        if not os.path.isfile(path):
            say(f"skipped: {path} is absent")
            sys.exit(77)
    args.gguf_path = args.gguf
    if not (args.gguf and os.path.isfile(args.gguf)):
        args.gguf = ""
    # Open MPI as root (CI), and one BLAS thread per process: K = 3 shares 2 cores.
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.makedirs(args.work, exist_ok=True)
    start = time.monotonic()
    for case in args.cases:
        if case == "configs":
            case_configs(args)
        elif case == "kill":
            case_kill(args)
        elif case == "bad-flag":
            case_bad_flag(args)
        else:
            fail("unknown case " + case)
    say(f"PASS {' '.join(args.cases)} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
