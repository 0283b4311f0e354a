"""The checks that need a GPU, in one run: `make gpu-check` (or `python benchmarks/gpu_check.py`).

On a CUDA machine, in well under 8 minutes on one GPU:
  1. the gpu-flagged tests (fp16 with loss scaling in the trainer) and the gpu-flagged notebook cells
     (04a_trainer, 06_finetune_glue: MRPC-sized fine-tuning timed in bf16 and fp16, 07_squad);
  2. the real-batch benchmark of `bench_model.py` (MRPC-like and SQuAD-like batches, padded to their
     longest member) in bf16 and fp16 autocast, timed with CUDA events: bert_nb's default path, its padded
     path, transformers (sdpa) and pytorch-pretrained-bert;
and prints one summary table. Without a GPU (or with `--dry-run`) it says so, runs the same benchmark code
on the CPU with a tiny model in fp32, and lists the GPU checks it skipped: a check that the script itself works.
"""
import argparse, os, statistics, subprocess, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_model as bm  # noqa: E402  (the peers, their inputs and the real-length batches)

GPU_TESTS = ["tests/test_trainer.py::test_fp16_on_gpu"]
GPU_NOTEBOOKS = ["nbs/04a_trainer.ipynb", "nbs/06_finetune_glue.ipynb", "nbs/07_squad.ipynb"]


def cuda_time(fn, repeats):
    "Median seconds of `fn()` over `repeats` calls after one warm-up, timed with CUDA events (wall time on a CPU)."
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(device, dtypes, quick, repeats):
    "Rows of (batch, dtype, peer, seconds, ratio to bert_nb's default) for inference and a training step."
    s = bm.TINY if quick else bm.BASE
    peer_of = lambda p: "bert_nb" if p.startswith("bert_nb") else p
    rows = []
    for head in (False, True):
        models = {p: m.to(device) for p, m in bm.real_models(s, head=head).items()}
        opts = {p: torch.optim.AdamW(m.parameters(), lr=1e-5) for p, m in models.items()} if head else None
        cases = ([("MRPC-like train step", "mrpc", 16), ("SQuAD-like train step", "squad", 8)] if head else
                 [("MRPC-like inference", "mrpc", 32), ("SQuAD-like inference", "squad", 32)])
        for name, kind, B in cases:
            ids, tt, mask, frac = (t.to(device) if torch.is_tensor(t) else t for t in bm.real_batch(kind, B, s["vocab_size"], 7, quick))
            labels = torch.randint(0, 2, (B,), device=device)
            for dtype in dtypes:
                def run(p, dtype=dtype):
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                        if head:
                            models[p].train()
                            bm.train_step(peer_of(p), models[p], opts[p], (ids, tt, mask, labels))
                        else:
                            with torch.inference_mode(): bm.call(peer_of(p), models[p].eval(), ids, tt, mask)
                t = {p: cuda_time(lambda p=p: run(p), repeats) for p in bm.REAL}
                for p in bm.REAL:
                    rows.append((f"{name} {B}x{ids.size(1)} (real {frac:.2f})", str(dtype).split(".")[-1], p, t[p],
                                 t[p] / t["bert_nb"]))
        del models, opts
        if device.type == "cuda": torch.cuda.empty_cache()
    return rows


def run_checks(dry):
    "The gpu-flagged tests and notebook cells; (name, status) rows."
    if dry: return [(n, "skipped: no GPU") for n in GPU_TESTS + [f"{n} (gpu cells)" for n in GPU_NOTEBOOKS]]
    out = []
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", *GPU_TESTS], cwd=ROOT, capture_output=True, text=True)
    out.append((" ".join(GPU_TESTS), "passed" if r.returncode == 0 else "FAILED: " + r.stdout.strip().splitlines()[-1]))
    for nb in GPU_NOTEBOOKS:
        r = subprocess.run([str(Path(sys.executable).parent / "nbdev_test"), "--flags", "gpu", "--path", nb], cwd=ROOT,
                           capture_output=True, text=True)
        out.append((f"{nb} (gpu cells)", "passed" if r.returncode == 0 else "FAILED: " + (r.stderr or r.stdout)[-300:]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="run on the CPU with a tiny model even if a GPU is there")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    t0, gpu = time.time(), torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if gpu else "cpu")
    name = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores), dry run: no GPU"
    print(f"gpu-check on {name}; torch {torch.__version__}", flush=True)
    checks = run_checks(dry=not gpu)
    dtypes = [torch.bfloat16, torch.float16] if gpu else [torch.float32]
    rows = bench(device, dtypes, quick=not gpu, repeats=args.repeats if gpu else 2)
    print("\n| check | result |\n|---|---|")
    for c, r in checks: print(f"| {c} | {r} |")
    print("\n| batch | dtype | peer | seconds | ratio to bert_nb |\n|---|---|---|---|---|")
    for b, d, p, t, r in rows: print(f"| {b} | {d} | {p} | {t:.4f} | {r:.2f} |")
    print(f"\n{'GPU' if gpu else 'dry run'} finished in {time.time() - t0:.0f} s")
    return 0 if all(r in ("passed",) or r.startswith("skipped") for _, r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
