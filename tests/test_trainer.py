"""The trainer on a toy model: accumulation = big batch, torchrun (2 CPU processes) = one process, an interrupted
and resumed run = an uninterrupted one, bf16 / fp16 / static loss scaling, start-up checks, metrics and plot."""
import json, os, signal, socket, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from bert_nb.trainer import (StaticLossScaler, Trainer, TrainingArgs, add_training_arguments, latest_checkpoint,
                             plot_metrics, setup_device)

ROOT = Path(__file__).resolve().parents[1]

TOY = '''
import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import TensorDataset

class Toy(nn.Module):
    "Linear -> LayerNorm -> dropout -> Linear, MSE loss against y."
    def __init__(self, d=8, p=0.):
        super().__init__()
        self.lin, self.LayerNorm, self.drop, self.out = nn.Linear(d, d), nn.LayerNorm(d), nn.Dropout(p), nn.Linear(d, 1)
    def forward(self, x, y): return F.mse_loss(self.out(self.drop(self.LayerNorm(self.lin(x)))).squeeze(-1), y)

def toy_data(n=64, d=8, seed=0):
    "n examples (x, y = x @ w): the same w for every seed, x drawn with `seed`."
    w = torch.randn(d, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, x @ w)

def toy_model(p=0., seed=0, d=8): torch.manual_seed(seed); return Toy(d=d, p=p)

def params(m): return torch.cat([p.detach().flatten() for p in m.parameters()])
'''
exec(TOY)


def targs(tmp_path, name, **kw):
    defaults = dict(train_batch_size=8, learning_rate=1e-2, num_train_epochs=2, logging_steps=1, progress=False,
                    plot=False, warmup_proportion=0.1, no_cuda=True)
    return TrainingArgs(str(tmp_path / name), **{**defaults, **kw})


def read_metrics(out): return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("optimizer", ["bertadam", "adamw"])
def test_accumulation_equals_big_batch(tmp_path, optimizer):
    "k micro-batches of b then one step = one step on the batch of k*b, over 2 epochs (16 steps)."
    runs = {}
    for k in (1, 2, 4):
        m = toy_model()
        args = targs(tmp_path, f"k{k}", gradient_accumulation_steps=k, optimizer=optimizer)
        res = Trainer(m, args, toy_data()).train()
        assert res["step"] == 16
        runs[k] = params(m)
    assert (runs[1] - params(toy_model())).abs().max() > 1e-2  # it trained
    for k in (2, 4): torch.testing.assert_close(runs[k], runs[1], atol=1e-6, rtol=0)


DDP_SCRIPT = TOY + '''
import argparse, sys
import torch.distributed as dist
from bert_nb.trainer import Trainer, TrainingArgs, add_training_arguments
p = add_training_arguments(argparse.ArgumentParser()); p.add_argument("--result")
ns = p.parse_args()
m = toy_model()
tr = Trainer(m, TrainingArgs.from_namespace(ns), toy_data())
res = tr.train()
if tr.rank == 0:
    torch.save(dict(params=params(m), world_size=tr.world_size, distributed=tr.distributed, step=res["step"],
                    local_rank=ns.local_rank), ns.result)
if dist.is_initialized(): dist.destroy_process_group()
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cmd, cwd):
    launcher_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_torchrun_two_processes_equal_one(tmp_path):
    """`torchrun --nproc_per_node 2` (gloo, CPU) with train_batch_size 4 = one process with 8 (pytorch-pretrained-bert's
    semantics: train_batch_size is per process); the legacy `torch.distributed.launch`, which passes `--local-rank=N`,
    too."""
    script = tmp_path / "train_toy.py"
    script.write_text(DDP_SCRIPT)
    common = ["--no_cuda", "--num_train_epochs", "1", "--logging_steps", "1", "--learning_rate", "1e-2",
              "--no_progress", "--no_plot", "--gradient_accumulation_steps", "2"]
    runs = {name: _launch([sys.executable, "-m", launcher, "--nproc_per_node", "2", "--master_port", str(_free_port()),
                           str(script), "--output_dir", str(tmp_path / name), "--train_batch_size", "4",
                           "--result", str(tmp_path / f"{name}.pt"), *common], tmp_path)
            for name, launcher in (("ddp", "torch.distributed.run"), ("legacy", "torch.distributed.launch"))}
    # meanwhile, one process with the whole batch, through the same flags
    ns = add_training_arguments(__import__("argparse").ArgumentParser()).parse_args(
        ["--output_dir", str(tmp_path / "one"), "--train_batch_size", "8", *common])
    one = toy_model()
    res = Trainer(one, TrainingArgs.from_namespace(ns), toy_data()).train()
    for name, p in runs.items():
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, f"{name}:\n{out[-6000:]}"
    ddp, legacy = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "legacy.pt")
    assert res["step"] == 8 and (params(one) - params(toy_model())).abs().max() > 1e-2
    # torchrun: env only
    assert (ddp["world_size"], ddp["distributed"], ddp["step"], ddp["local_rank"]) == (2, True, 8, -1)
    # --local-rank=0 parsed
    assert (legacy["world_size"], legacy["distributed"], legacy["step"], legacy["local_rank"]) == (2, True, 8, 0)
    torch.testing.assert_close(ddp["params"], params(one), atol=1e-6, rtol=0)
    torch.testing.assert_close(legacy["params"], params(one), atol=1e-6, rtol=0)
    # rank 0 wrote, once
    assert len(read_metrics(tmp_path / "ddp")) == 8 and not list((tmp_path / "ddp").glob(".tmp-*"))


def test_local_rank_flag_spellings_and_setup(tmp_path, monkeypatch):
    """--local_rank (pytorch-pretrained-bert) and --local-rank (torch 2's launch) both parse; --local_rank >= 0 joins a
    process group from the environment."""
    p = add_training_arguments(__import__("argparse").ArgumentParser())
    assert p.parse_args(["--output_dir", "o", "--local_rank", "1"]).local_rank == 1
    assert p.parse_args(["--output_dir", "o", "--local-rank=2"]).local_rank == 2
    ta = TrainingArgs.from_namespace(p.parse_args(["--output_dir", "o", "--fp16", "--loss_scale", "128",
                                                   "--gradient_accumulation_steps", "4"]))
    assert (ta.fp16, ta.loss_scale, ta.gradient_accumulation_steps, ta.local_rank) == (True, 128, 4, -1)
    for v in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"): monkeypatch.delenv(v, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"): setup_device(TrainingArgs("o", no_cuda=True, local_rank=0))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    try:
        dev, n_gpu, rank, world, distributed = setup_device(TrainingArgs("o", no_cuda=True, local_rank=0))
        assert (dev.type, n_gpu, rank, world, distributed) == ("cpu", 0, 0, 1, True)
        assert torch.distributed.get_backend() == "gloo"
    finally:
        if torch.distributed.is_initialized(): torch.distributed.destroy_process_group()


def _stop_at(n, how):
    def cb(tr):
        if tr.state["step"] == n:
            if how == "raise": raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the trainer finishes the step, saves, re-raises
    return cb


@pytest.mark.parametrize("how,optimizer", [("raise", "bertadam"), ("sigint", "adamw")])
def test_interrupt_and_resume_is_exact(tmp_path, how, optimizer):
    """Stopped at step 5 (mid-epoch, accumulation 2, dropout on), resumed from 'latest': same parameters and metrics,
    bit for bit."""
    kw = dict(gradient_accumulation_steps=2, optimizer=optimizer, logging_steps=3, num_train_epochs=3)
    full = toy_model(p=0.2)
    Trainer(full, targs(tmp_path, "full", **kw), toy_data()).train()
    m = toy_model(p=0.2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(m, targs(tmp_path, "run", **kw), toy_data(), callbacks=[_stop_at(5, how)]).train()
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-5"
    assert json.loads((tmp_path / "run/checkpoint-5/trainer_state.json").read_text())["batch_in_epoch"] == 10
    assert not torch.equal(params(m), params(full))
    resumed = toy_model(p=0.2, seed=1)  # another initialisation: the checkpoint replaces it
    res = Trainer(resumed, targs(tmp_path, "run", resume_from="latest", **kw), toy_data()).train()
    assert res["step"] == 24
    assert torch.equal(params(resumed), params(full))
    assert read_metrics(tmp_path / "run") == read_metrics(tmp_path / "full")


def test_bf16_autocast_trains_on_cpu(tmp_path):
    m = toy_model()
    seen = []
    Trainer(m, targs(tmp_path, "bf16", bf16=True, num_train_epochs=3), toy_data(),
            callbacks=[lambda tr: seen.append(tr.model.lin(torch.zeros(1, 8)).dtype)]).train()
    losses = [r["loss"] for r in read_metrics(tmp_path / "bf16")]
    assert len(losses) == 24 and losses[-1] < losses[0] / 3
    with torch.autocast("cpu", dtype=torch.bfloat16): assert m.lin(torch.zeros(1, 8)).dtype == torch.bfloat16
    assert m.lin.weight.dtype == torch.float32  # weights stay fp32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with GradScaler needs a CUDA GPU")
@pytest.mark.parametrize("loss_scale", [0, 128])
def test_fp16_on_gpu(tmp_path, loss_scale):
    m = toy_model()
    args = targs(tmp_path, "fp16", fp16=True, loss_scale=loss_scale, no_cuda=False, num_train_epochs=3)
    res = Trainer(m, args, toy_data()).train()
    losses = [r["loss"] for r in read_metrics(tmp_path / "fp16")]
    assert res["step"] == 24 and losses[-1] < losses[0] / 3 and m.lin.weight.device.type == "cuda"
    sc = torch.load(Path(res["checkpoint"]) / "scaler.pt")
    assert sc["scale"] == 128 if loss_scale else sc["scale"] > 0


def test_static_loss_scale_logic_fp32(tmp_path):
    "loss_scale=128 in fp32: the same update bit for bit; inf gradients: every step skipped, parameters unchanged."
    a, b = toy_model(), toy_model()
    Trainer(a, targs(tmp_path, "s0"), toy_data()).train()
    Trainer(b, targs(tmp_path, "s128", loss_scale=128), toy_data()).train()
    assert torch.equal(params(a), params(b)) and not torch.equal(params(a), params(toy_model()))
    x, y = toy_data().tensors
    bad = TensorDataset(x, torch.full_like(y, float("inf")))
    for opt in ("bertadam", "adamw"):
        c = toy_model()
        tr = Trainer(c, targs(tmp_path, f"inf-{opt}", loss_scale=128, optimizer=opt), bad)
        tr.train()
        assert torch.equal(params(c), params(toy_model()))  # every step skipped
        if opt == "adamw": assert tr.scheduler.last_epoch == 0  # and the schedule did not advance
    sc = StaticLossScaler(4.)
    lin = nn.Linear(2, 1)
    sgd = torch.optim.SGD(lin.parameters(), lr=1.)
    sc.scale(lin(torch.ones(1, 2)).sum()).backward()
    sc.unscale_(sgd)
    assert torch.equal(lin.weight.grad, torch.ones(1, 2)) and not sc.found_inf  # gradient / 4 = the true gradient
    w = lin.weight.detach().clone()
    lin.weight.grad[0, 0] = float("nan")
    sc._unscaled = False
    sc.step(sgd)
    assert sc.found_inf and torch.equal(lin.weight, w)


def test_dict_batches_tuple_outputs_and_metrics(tmp_path):
    "A dict batch goes in as keywords; a (loss, logits) output; compute_metrics sees the whole eval set joined."
    class Clf(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.LayerNorm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 2)
        def forward(self, input_ids, labels):
            logits = self.head(self.LayerNorm(self.emb(input_ids)).mean(1))
            return F.cross_entropy(logits, labels), logits
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (40, 5), generator=g)
    data = [dict(input_ids=i, labels=(i[0] < 5).long()) for i in ids]
    def acc(outs, batches):
        right = (outs[1].argmax(-1) == batches["labels"]).float()
        return {"accuracy": right.mean().item(), "n": len(batches["labels"])}
    torch.manual_seed(0)
    tr = Trainer(Clf(), targs(tmp_path, "clf", learning_rate=5e-2, num_train_epochs=5, eval_steps=10), data[:32],
                 data[32:], compute_metrics=acc)
    before = tr.evaluate()
    res = tr.train()
    assert res["eval_n"] == 8 and res["eval_loss"] < before["eval_loss"] and 0 <= res["eval_accuracy"] <= 1
    assert [r["step"] for r in read_metrics(tmp_path / "clf") if "eval_loss" in r] == [10, 20]


def test_bad_input_fails_at_start(tmp_path):
    steps = []
    def run(name, model=None, **kw):
        Trainer(model or toy_model(), targs(tmp_path, name, **kw), toy_data(),
                callbacks=[lambda tr: steps.append(1)]).train()
    with pytest.raises(ValueError, match="Invalid gradient_accumulation_steps parameter: 3.*train_batch_size=8"):
        run("acc", gradient_accumulation_steps=3)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match="cannot be created"): run("afile/out")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="not writable"): run("ro")
        finally: ro.chmod(0o700)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/old.txt").write_text("x")
    with pytest.raises(ValueError, match=r"not empty \(old.txt.*overwrite_output_dir"): run("full")
    run("other", max_steps=2)  # a checkpoint of Toy(d=8)
    with pytest.raises(ValueError,
                       match=r"checkpoint-2 does not fit this model: 'lin.weight' is \(8, 8\) there and \(4, 4\) here"):
        Trainer(toy_model(d=4), targs(tmp_path, "other", resume_from="latest"), toy_data(d=4)).train()
    assert steps == [1, 1]  # only the good run trained
    run("full", overwrite_output_dir=True, max_steps=1)
    assert steps == [1, 1, 1]


def test_metrics_jsonl_csv_and_plot(tmp_path):
    m = toy_model()
    res = Trainer(m, targs(tmp_path, "log", logging_steps=2, num_train_epochs=4, plot=True), toy_data()).train()
    rs = read_metrics(tmp_path / "log")
    assert [r["step"] for r in rs] == list(range(2, 33, 2))
    assert set(rs[0]) == {"step", "epoch", "loss", "lr"} and rs[3]["epoch"] == 1.0
    losses = [r["loss"] for r in rs]
    assert losses[-1] < losses[0] / 3 and sum(losses[:8]) > sum(losses[8:])
    lrs = [r["lr"] for r in rs]
    assert max(lrs) <= 1e-2 and lrs[-1] < lrs[4]  # warmup then linear decay
    csv_lines = (tmp_path / "log/metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "step,epoch,loss,lr" and len(csv_lines) == 17
    png = plot_metrics(tmp_path / "log")
    assert png == tmp_path / "log/loss_curve.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["plot"] == str(png)


def test_fp16_dynamic_scaling_runs_on_cpu(tmp_path):
    """The GradScaler path (fp16 autocast exists on CPUs too): it trains and checkpoints its scale; a skipped step
    leaves the schedule."""
    m = toy_model()
    args = targs(tmp_path, "fp16cpu", fp16=True, optimizer="adamw", learning_rate=3e-2, num_train_epochs=3)
    tr = Trainer(m, args, toy_data())
    res = tr.train()
    losses = [r["loss"] for r in read_metrics(tmp_path / "fp16cpu")]
    assert res["step"] == 24 and losses[-1] < losses[0] / 3
    scale = torch.load(Path(res["checkpoint"]) / "scaler.pt")["scale"]
    assert 0 < scale < 65536  # the first steps overflowed at 2**16 and were skipped ...
    assert tr.scheduler.last_epoch < 24  # ... without advancing the learning-rate schedule


def _lengths_data(n=48, T=12, seed=0):
    "Token-id rows with zero padding after a random length, and a target: a dataset whose examples differ in length."
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (n,), generator=g)
    ids = torch.randint(1, 50, (n, T), generator=g) * (torch.arange(T) < lengths[:, None])
    return TensorDataset(ids, torch.randn(n, generator=g)), lengths


class LenModel(nn.Module):
    "Mean of embedded real tokens -> a number; MSE loss; records the widest row of every batch it sees."
    def __init__(self):
        super().__init__()
        self.emb, self.out, self.seen = nn.Embedding(50, 8), nn.Linear(8, 1), []
    def forward(self, ids, y):
        self.seen.append(ids.ne(0).sum(1).tolist())
        h = self.emb(ids).sum(1) / ids.ne(0).sum(1, keepdim=True)
        return F.mse_loss(self.out(h).squeeze(-1), y)


def test_group_by_length_sees_every_example_and_resumes_exactly(tmp_path):
    data, lengths = _lengths_data()
    torch.manual_seed(0)
    m = LenModel()
    Trainer(m, targs(tmp_path, "g", train_batch_size=4, num_train_epochs=1, group_by_length=True), data).train()
    seen = m.seen
    assert sorted(x for b in seen for x in b) == sorted(lengths.tolist())  # every example once
    assert all(b == sorted(b, reverse=True) for b in seen)  # within a batch, longest first
    spread = lambda batches: sum(max(b) - min(b) for b in batches)
    assert spread(seen) < spread([lengths[i:i + 4].tolist() for i in range(0, 48, 4)]) / 2  # batches of like length
    kw = dict(train_batch_size=4, num_train_epochs=2, group_by_length=True, logging_steps=1)
    torch.manual_seed(0)
    full = LenModel()
    Trainer(full, targs(tmp_path, "full", **kw), data).train()
    torch.manual_seed(0)
    cut = LenModel()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, targs(tmp_path, "cut", **kw), data,
                callbacks=[lambda tr: (_ for _ in ()).throw(KeyboardInterrupt) if tr.state["step"] == 7 else None]).train()
    torch.manual_seed(1)
    resumed = LenModel()
    Trainer(resumed, targs(tmp_path, "cut", resume_from="latest", **kw), data).train()
    assert torch.equal(params(resumed), params(full)) and read_metrics(tmp_path / "cut") == read_metrics(tmp_path / "full")


def test_evaluation_runs_longest_first_and_returns_dataset_order(tmp_path):
    data, lengths = _lengths_data(n=20)
    torch.manual_seed(0)
    m, got = LenModel(), {}
    def metrics(outs, batches):
        got["ids"] = batches[0]
        return {}
    Trainer(m, targs(tmp_path, "e", eval_batch_size=6), eval_dataset=data, compute_metrics=metrics).evaluate()
    assert torch.equal(got["ids"], data.tensors[0])  # the batches handed to compute_metrics: dataset order
    assert [max(b) for b in m.seen] == sorted((max(b) for b in m.seen), reverse=True)  # computed longest first
