"""Model speed on CPU: bert_nb beside transformers and pytorch-pretrained-bert 0.6.2, in one process.

    python benchmarks/bench_model.py [--repeats 5] [--quick] [--only inference|train|bf16|matmul] [--json PATH]

What it measures (bert-base sizes: vocab 30522, hidden 768, 12 layers, 12 heads, intermediate 3072;
`--quick` swaps in a tiny model and tiny batches: a smoke run of well under a minute on an idle
machine, mostly spent starting four Python processes and importing torch and transformers):
  1. matmul: fp32 and bf16 2048 x 2048 x 2048 GFLOP/s in nn.Linear's layout (`a @ b.T`), the machine's
     reference (on CPUs without AVX512-BF16 or AMX, bf16 is emulated: `a @ b` runs at < 1 GFLOP/s);
  2. inference: `BertModel` forward, eval mode, fp32, under `torch.inference_mode()`, batch 8 x 128 and
     8 x 512 with an all-ones attention mask, and 8 x 128 with 2 rows padded by 32 tokens. The three
     peers hold the SAME state dict, and their last hidden states are compared first (max abs diff).
     Achieved GFLOP/s counts the linears, attention's two matmuls and the pooler analytically;
  3. train: one `BertForSequenceClassification` (2 labels) step at 8 x 128, dropout on: forward,
     backward, `torch.optim.AdamW` step, zero_grad. Peak RSS of each peer is read in a fresh
     subprocess (this script re-invoked with `--_peak NAME`) that imports the same libraries,
     builds the model and optimizer and runs 3 steps;
  4. bf16: `torch.autocast('cpu', dtype=torch.bfloat16)` against fp32, for bert_nb and transformers:
     speed ratio, and max abs / mean abs / relative (norm) error of the last hidden state. Without native
     bf16 (see 1.) a forward takes ~20 s at 8 x 128, so this part then takes at most 3 repeats.
  5. real: batches as real data makes them, padded to their longest member: MRPC-like pairs (lengths
     ~N(52, 16) in 16..128; inference batch 32, training batch 16) and SQuAD-like windows of 384 (85%
     full, the rest 150..384; inference batch 8, training batch 4, smaller than on a GPU to fit CPU time).
     Peers: bert_nb's default path (skips the padding), bert_nb's padded path (`set_unpad(False)`),
     transformers (sdpa) and pytorch-pretrained-bert; printed with the real-token fraction and the
     ceiling of the speed-up (1 / that fraction). Outputs are compared at real tokens;
  6. end-to-end: `bert_nb run_classifier` on the bundled paraphrase set (all-MiniLM-L6-v2, 640 train and
     160 dev pairs, max_seq_length 128, batch 16, one epoch) against pytorch-pretrained-bert's way of
     running the same job (every example padded to max_seq_length: tests/seed_style/paraphrase_classifier.py
     on the pytorch_pretrained_bert package itself); examples per second, training and evaluation.
Peers are timed in turns (round-robin, so a noisy moment hits all alike), each after one warm-up call,
with garbage collection off while timed (as timeit); reported times are medians of `--repeats`.
Ratios are peer time / bert_nb time: above 1 means bert_nb is faster.
This is a benchmark, not a test: nothing here asserts a speed.
"""
import argparse, gc, json, os, statistics, subprocess, sys, time
import torch, transformers, pytorch_pretrained_bert as ppb
import bert_nb

BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
PEERS = ("bert_nb", "transformers", "pytorch-pretrained-bert")


def sizes(quick):
    "(model sizes, inference shapes, train shape, padding per padded row, matmul n)"
    return (TINY, [(2, 16), (2, 64)], (2, 16), 4, 256) if quick else (BASE, [(8, 128), (8, 512)], (8, 128), 32, 2048)


def build(peer, s, head=False):
    "The peer's BertModel (or BertForSequenceClassification with 2 labels when `head`)."
    if peer == "bert_nb":
        c = bert_nb.BertConfig(s["vocab_size"], **{k: v for k, v in s.items() if k != "vocab_size"})
        return bert_nb.BertForSequenceClassification(c, 2) if head else bert_nb.BertModel(c)
    if peer == "transformers":
        c = transformers.BertConfig(**s, hidden_act="gelu", num_labels=2, attn_implementation="sdpa")
        return transformers.BertForSequenceClassification(c) if head else transformers.BertModel(c)
    c = ppb.BertConfig(s["vocab_size"], **{k: v for k, v in s.items() if k != "vocab_size"})
    return ppb.BertForSequenceClassification(c, 2) if head else ppb.BertModel(c)


def call(peer, model, ids, tt, mask, labels=None):
    "Last hidden state (or the loss when `labels`), whatever the peer's API."
    if peer == "transformers":
        out = model(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=labels)
        return out.loss if labels is not None else out.last_hidden_state
    if labels is not None: return model(ids, tt, mask, labels)
    return model(ids, tt, mask, output_all_encoded_layers=False)[0]


def inputs(B, T, vocab, pad_rows=0, pad=0):
    "Random ids, token types half 0 half 1, mask all ones but the last `pad` tokens of `pad_rows` rows."
    ids = torch.randint(0, vocab, (B, T))
    tt = torch.cat([torch.zeros(B, T // 2, dtype=torch.long), torch.ones(B, T - T // 2, dtype=torch.long)], 1)
    mask = torch.ones(B, T, dtype=torch.long)
    if pad_rows: mask[:pad_rows, T - pad:] = 0
    return ids, tt, mask


def flops(B, T, s):
    "FLOPs of one forward: per layer 2BT(4H^2 + 2HI) for the linears, 4BT^2H for QK^T and PV; the pooler."
    H, I, L = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    return L * (2 * B * T * (4 * H * H + 2 * H * I) + 4 * B * T * T * H) + 2 * B * H * H


def timed(fn):
    gc.collect(); gc.disable()
    try:
        t = time.perf_counter(); fn(); return time.perf_counter() - t
    finally: gc.enable()


def round_robin(fns, repeats, warm=True):
    "name -> median seconds: one warm-up call each (unless the caller did it), then `repeats` turns over all peers."
    if warm:
        for fn in fns.values(): fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items(): times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_matmul(n, repeats):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a.bfloat16(), b.bfloat16()
    t = round_robin({"fp32": lambda: a @ b.T, "bf16": lambda: a16 @ b16.T}, repeats)
    res = {k: 2 * n ** 3 / v / 1e9 for k, v in t.items()}
    print(f"\n== matmul {n}^3 as a @ b.T (median of {repeats}) ==\n  fp32 {res['fp32']:7.1f} GFLOP/s   bf16 {res['bf16']:7.1f} GFLOP/s")
    return res


def load_all(s, head=False):
    "The three peers, eval mode, all holding bert_nb's random initial weights."
    torch.manual_seed(0)
    models = {p: build(p, s, head) for p in PEERS}
    sd = models["bert_nb"].state_dict()
    for p in PEERS[1:]: models[p].load_state_dict(sd, strict=True)
    return {p: m.eval() for p, m in models.items()}


def bench_inference(s, shapes, pad, repeats, gflops_ref):
    models, rows = load_all(s), []
    print(f"\n== inference, fp32, eval, seconds per forward (median of {repeats}); ratio = peer / bert_nb ==")
    print(f"  {'batch':14s} {'peer':24s} {'max|diff|':>10s} {'s/forward':>10s} {'GFLOP/s':>8s} {'%matmul':>8s} {'ratio':>6s}")
    cases = [(B, T, 0, PEERS) for B, T in shapes] + [(*shapes[0], 2, PEERS[:2])]
    with torch.inference_mode():
        for B, T, pad_rows, peers in cases:
            torch.manual_seed(1)
            ids, tt, mask = inputs(B, T, s["vocab_size"], pad_rows, pad)
            ref = call("bert_nb", models["bert_nb"], ids, tt, mask)
            real = mask.bool()  # padding positions hold nothing to compare (bert_nb leaves zeros there)
            diff = {p: (call(p, models[p], ids, tt, mask) - ref)[real].abs().max().item() for p in peers}
            t = round_robin({p: (lambda p=p: call(p, models[p], ids, tt, mask)) for p in peers}, repeats)
            label = f"{B}x{T}" + (f" pad{pad_rows}x{pad}" if pad_rows else "")
            for p in peers:
                gf = flops(B, T, s) / t[p] / 1e9
                rows.append(dict(batch=label, peer=p, max_abs_diff=diff[p], seconds=t[p], gflops=gf,
                                 pct_matmul=100 * gf / gflops_ref, ratio=t[p] / t["bert_nb"]))
                print(f"  {label:14s} {p:24s} {diff[p]:10.1e} {t[p]:10.3f} {gf:8.1f} {100 * gf / gflops_ref:7.0f}% {t[p] / t['bert_nb']:6.2f}")
    return rows


def train_step(peer, model, opt, batch):
    call(peer, model, *batch).backward(); opt.step(); opt.zero_grad()


def train_setup(s, shape):
    torch.manual_seed(2)
    B, T = shape
    return (*inputs(B, T, s["vocab_size"]), torch.randint(0, 2, (B,)))


def peak_rss(peers, quick):
    "peer -> peak RSS in MB of a fresh interpreter running 3 training steps (in parallel when `quick`, else in turn)."
    run = lambda p: subprocess.Popen([sys.executable, __file__, "--_peak", p] + ["--quick"] * quick, stdout=subprocess.PIPE, text=True)
    procs = {p: run(p) for p in peers} if quick else {}
    out = {}
    for p in peers:
        proc = procs.get(p) or run(p)
        out[p] = float(proc.communicate()[0].split()[-1])
        if proc.returncode: raise RuntimeError(f"peak RSS subprocess for {p} failed")
    return out


def _peak_child(peer, quick):
    s, _, shape, _, _ = sizes(quick)
    torch.manual_seed(0)
    model = build(peer, s, head=True).train()
    opt, batch = torch.optim.AdamW(model.parameters(), lr=1e-5), train_setup(s, shape)
    for _ in range(3): train_step(peer, model, opt, batch)
    # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork + exec.
    print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024)  # kB -> MB


def bench_train(s, shape, repeats, quick):
    models = {p: m.train() for p, m in load_all(s, head=True).items()}
    opts = {p: torch.optim.AdamW(m.parameters(), lr=1e-5) for p, m in models.items()}
    batch = train_setup(s, shape)
    t = round_robin({p: (lambda p=p: train_step(p, models[p], opts[p], batch)) for p in PEERS}, repeats)
    del models, opts; gc.collect()
    rss = peak_rss(PEERS, quick)
    print(f"\n== train step {shape[0]}x{shape[1]} (forward, backward, AdamW), median of {repeats}; "
          f"peak RSS in a fresh process, 3 steps ==")
    print(f"  {'peer':24s} {'s/step':>8s} {'ratio':>6s} {'peak MB':>8s} {'ratio':>6s}")
    rows = []
    for p in PEERS:
        rows.append(dict(peer=p, seconds=t[p], ratio=t[p] / t["bert_nb"], peak_rss_mb=rss[p], rss_ratio=rss[p] / rss["bert_nb"]))
        print(f"  {p:24s} {t[p]:8.3f} {t[p] / t['bert_nb']:6.2f} {rss[p]:8.0f} {rss[p] / rss['bert_nb']:6.2f}")
    return rows


def bench_bf16(s, shape, repeats):
    models, rows = load_all(s), []
    torch.manual_seed(3)
    ids, tt, mask = inputs(*shape, s["vocab_size"])

    def fwd(p, bf16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return call(p, models[p], ids, tt, mask).float()
    print(f"\n== bf16 autocast vs fp32, {shape[0]}x{shape[1]}, median of {repeats}; speedup = fp32 time / bf16 time ==")
    print(f"  {'peer':24s} {'fp32 s':>8s} {'bf16 s':>8s} {'speedup':>8s} {'max|diff|':>10s} {'mean|diff|':>10s} {'rel err':>8s} {'max|fp32|':>9s}")
    with torch.inference_mode():
        outs = {(p, b): fwd(p, b) for p in PEERS[:2] for b in (False, True)}  # the warm-up calls, kept for accuracy
        t = round_robin({k: (lambda k=k: fwd(*k)) for k in outs}, repeats, warm=False)
        for p in PEERS[:2]:
            ref = outs[p, False]; d = outs[p, True] - ref
            r = dict(peer=p, fp32_s=t[p, False], bf16_s=t[p, True], speedup=t[p, False] / t[p, True], max_abs=d.abs().max().item(),
                     mean_abs=d.abs().mean().item(), rel_err=(d.norm() / ref.norm()).item(), ref_max_abs=ref.abs().max().item())
            rows.append(r)
            print(f"  {p:24s} {r['fp32_s']:8.3f} {r['bf16_s']:8.3f} {r['speedup']:8.2f} {r['max_abs']:10.2e} {r['mean_abs']:10.2e} {r['rel_err']:8.1e} {r['ref_max_abs']:9.2f}")
    return rows


REAL = ("bert_nb", "bert_nb padded", "transformers", "pytorch-pretrained-bert")


def real_lengths(kind, B, g, quick=False):
    "Token counts of B examples: MRPC-like sentence pairs or SQuAD-like 384-token windows."
    if kind == "mrpc":
        lo, hi = (4, 32) if quick else (16, 128)
        return (torch.randn(B, generator=g) * (4 if quick else 16) + (13 if quick else 52)).round().clamp(lo, hi).long()
    T = 64 if quick else 384
    full = torch.rand(B, generator=g) < 0.85
    return torch.where(full, torch.full((B,), T), torch.randint(T * 2 // 5, T + 1, (B,), generator=g))


def real_batch(kind, B, vocab, seed, quick=False):
    "ids, token types, mask of a batch padded to its longest member, and the real-token fraction."
    g = torch.Generator().manual_seed(seed)
    lengths = real_lengths(kind, B, g, quick)
    T = int(lengths.max())
    mask = (torch.arange(T) < lengths[:, None]).long()
    ids = torch.randint(1, vocab, (B, T), generator=g) * mask
    tt = ((torch.arange(T) >= lengths[:, None] // 2) & (mask == 1)).long()
    return ids, tt, mask, mask.float().mean().item()


def real_models(s, head=False):
    "The peers of the real-batch runs: bert_nb's default path and its padded path hold the same weights."
    models = load_all(s, head)
    padded = build("bert_nb", s, head)
    padded.load_state_dict(models["bert_nb"].state_dict())
    models["bert_nb padded"] = padded.set_unpad(False).eval()
    return {p: models[p] for p in REAL}


def bench_real(s, repeats, quick):
    "Inference and training steps on batches padded as real data pads them."
    peer_of = lambda p: "bert_nb" if p.startswith("bert_nb") else p
    rows, models = [], real_models(s)
    print(f"\n== real batches, fp32, median of {repeats}; ratio = peer / bert_nb (default) ==")
    print(f"  {'batch':30s} {'peer':24s} {'real':>5s} {'ceiling':>7s} {'max|diff|':>10s} {'seconds':>8s} {'ratio':>6s}")
    cases = [("MRPC-like inference", "mrpc", 8 if quick else 32), ("SQuAD-like inference", "squad", 2 if quick else 8)]
    with torch.inference_mode():
        for name, kind, B in cases:
            ids, tt, mask, frac = real_batch(kind, B, s["vocab_size"], 5, quick)
            ref = call("bert_nb", models["bert_nb padded"], ids, tt, mask)
            real = mask.bool()
            diff = {p: (call(peer_of(p), m, ids, tt, mask) - ref)[real].abs().max().item() for p, m in models.items()}
            t = round_robin({p: (lambda p=p: call(peer_of(p), models[p], ids, tt, mask)) for p in REAL}, repeats)
            for p in REAL:
                rows.append(dict(batch=f"{name} {B}x{ids.size(1)}", peer=p, real_fraction=frac, ceiling=1 / frac,
                                 max_abs_diff_real=diff[p], seconds=t[p], ratio=t[p] / t["bert_nb"]))
                print(f"  {rows[-1]['batch']:30s} {p:24s} {frac:5.2f} {1 / frac:7.2f} {diff[p]:10.1e} {t[p]:8.3f} "
                      f"{t[p] / t['bert_nb']:6.2f}")
    del models
    heads = {p: m.train() for p, m in real_models(s, head=True).items()}
    opts = {p: torch.optim.AdamW(m.parameters(), lr=1e-5) for p, m in heads.items()}
    for name, kind, B in [("MRPC-like train step", "mrpc", 4 if quick else 16), ("SQuAD-like train step", "squad", 2 if quick else 4)]:
        ids, tt, mask, frac = real_batch(kind, B, s["vocab_size"], 6, quick)
        batch = (ids, tt, mask, torch.randint(0, 2, (B,)))
        t = round_robin({p: (lambda p=p: train_step(peer_of(p), heads[p], opts[p], batch)) for p in REAL}, repeats)
        for p in REAL:
            rows.append(dict(batch=f"{name} {B}x{ids.size(1)}", peer=p, real_fraction=frac, ceiling=1 / frac,
                             seconds=t[p], ratio=t[p] / t["bert_nb"]))
            print(f"  {rows[-1]['batch']:30s} {p:24s} {frac:5.2f} {1 / frac:7.2f} {'':>10s} {t[p]:8.3f} {t[p] / t['bert_nb']:6.2f}")
    return rows


def bench_end_to_end():
    "bert_nb run_classifier vs pytorch-pretrained-bert's way (pad to max_seq_length) on the paraphrase set."
    import json as js, shutil, tempfile
    from pathlib import Path
    from safetensors.torch import load_file
    from bert_nb import glue, trainer
    root, work = Path(__file__).resolve().parents[1], Path(tempfile.mkdtemp())
    mini, data = bert_nb.minilm_dir(), root / "bert_nb" / "data" / "paraphrase_demo"
    seed_model = work / "minilm_bin"  # pytorch-pretrained-bert reads pytorch_model.bin with `bert.` names
    seed_model.mkdir()
    sd = {f"bert.{k}": v for k, v in load_file(mini / "model.safetensors").items() if not k.endswith("position_ids")}
    torch.save(sd, seed_model / "pytorch_model.bin")
    for f in ("config.json", "vocab.txt"): shutil.copy(mini / f, seed_model / f)
    script = (root / "tests" / "seed_style" / "paraphrase_classifier.py").read_text()
    (work / "seed_way.py").write_text(script.replace("bert_nb", "pytorch_pretrained_bert"))
    common = ["--do_train", "--do_eval", "--do_lower_case", "--max_seq_length", "128", "--train_batch_size", "16",
              "--eval_batch_size", "16", "--num_train_epochs", "1", "--learning_rate", "5e-5"]
    # bert_nb: the command's own function, its training and evaluation loops timed where they run
    spent = {"train": 0.0, "eval": 0.0}
    def timing(name, fn):
        def wrapped(*a, **kw):
            t = time.perf_counter()
            try: return fn(*a, **kw)
            finally: spent[name] += time.perf_counter() - t
        return wrapped
    train, evaluate = trainer.Trainer.train, trainer.Trainer.evaluate
    trainer.Trainer.train, trainer.Trainer.evaluate = timing("train", train), timing("eval", evaluate)
    try:
        ns = glue.add_run_classifier_arguments(argparse.ArgumentParser()).parse_args(
            ["--task_name", "mrpc", "--data_dir", str(data), "--bert_model", str(mini), "--output_dir", str(work / "ours"),
             "--no_progress", "--no_plot", *common])
        ours = glue.run_classifier(ns)
    finally: trainer.Trainer.train, trainer.Trainer.evaluate = train, evaluate
    r = subprocess.run([sys.executable, str(work / "seed_way.py"), "--data_dir", str(data), "--bert_model", str(seed_model),
                        "--output_dir", str(work / "seed"), *common], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"pytorch-pretrained-bert's way failed:\n{r.stderr[-2000:]}")
    theirs = js.loads(r.stdout.splitlines()[-1])
    n_train, n_dev = 640, 160
    rows = [dict(run="bert_nb run_classifier", train_s=spent["train"], eval_s=spent["eval"], acc=ours["eval"]["acc"]),
            dict(run="pytorch-pretrained-bert's way", train_s=theirs["train_seconds"], eval_s=theirs["eval_seconds"],
                 acc=theirs["acc"])]
    print(f"\n== end to end: the paraphrase set ({n_train} train, {n_dev} dev pairs), all-MiniLM-L6-v2, "
          "max_seq_length 128, batch 16, 1 epoch ==")
    print(f"  {'run':32s} {'train ex/s':>10s} {'eval ex/s':>10s}")
    for row in rows:
        row.update(train_examples_per_s=n_train / row["train_s"], eval_examples_per_s=n_dev / row["eval_s"])
        print(f"  {row['run']:32s} {row['train_examples_per_s']:10.1f} {row['eval_examples_per_s']:10.1f}")
    print(f"  ratio (bert_nb / pytorch-pretrained-bert's way): training "
          f"{rows[0]['train_examples_per_s'] / rows[1]['train_examples_per_s']:.2f}x, "
          f"evaluation {rows[0]['eval_examples_per_s'] / rows[1]['eval_examples_per_s']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny model and batches: a smoke run")
    ap.add_argument("--only", choices=["inference", "train", "bf16", "matmul", "real", "e2e"])
    ap.add_argument("--json", help="write the results to this path")
    ap.add_argument("--_peak", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count())
    if args._peak: return _peak_child(args._peak, args.quick)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when the output goes to a file
    s, shapes, train_shape, pad, n = sizes(args.quick)
    native = any(getattr(torch.cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"native bf16 (AVX512-BF16/AMX): {native}, load average {os.getloadavg()[0]:.1f}\n"
          f"{'quick (tiny sizes)' if args.quick else 'bert-base'}: {s}")
    run = lambda part: args.only in (None, part)
    res = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
           "native_bf16": native, "config": s, "repeats": args.repeats, "loadavg_start": os.getloadavg()[0]}
    if args.only not in ("train", "real", "e2e"): res["matmul"] = bench_matmul(n, args.repeats)
    if run("inference"): res["inference"] = bench_inference(s, shapes, pad, args.repeats, res["matmul"]["fp32"])
    if run("train"): res["train"] = bench_train(s, train_shape, args.repeats, args.quick)
    if run("bf16"): res["bf16"] = bench_bf16(s, shapes[0], args.repeats if native else min(args.repeats, 3))
    if run("real"): res["real"] = bench_real(s, args.repeats, args.quick)
    if run("e2e") and not args.quick: res["e2e"] = bench_end_to_end()
    res["loadavg_end"] = os.getloadavg()[0]
    print(f"\nload average (1 min) at the start {res['loadavg_start']:.1f}, at the end {res['loadavg_end']:.1f} "
          f"on {os.cpu_count()} cores: above {os.cpu_count()}, other processes competed for the CPU")
    if args.json:
        with open(args.json, "w") as f: json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
