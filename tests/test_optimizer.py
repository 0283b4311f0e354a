"""BertAdam and its schedules against pytorch-pretrained-bert 0.6.2's, step for step
(run with -s to see the differences)."""
import copy
import io
import logging
from collections import OrderedDict

import pytest
import torch
from torch import nn

import pytorch_pretrained_bert.optimization as seed
from bert_nb import optimization as ours

pytestmark = pytest.mark.filterwarnings("ignore:This overload of add_ is deprecated:UserWarning")  # the seed's BertAdam
SCHEDULES = ["warmup_linear", "warmup_cosine", "warmup_constant", "none"]
LR, STEPS = 0.01, 20


def tiny_model():
    "Embedding, Linear, LayerNorm and a decoder tied to the embedding, with noise on every parameter; fixed seed."
    torch.manual_seed(0)
    m = nn.Sequential(OrderedDict(embeddings=nn.Embedding(10, 8), dense=nn.Linear(8, 16), LayerNorm=nn.LayerNorm(16),
                                  out=nn.Linear(16, 8), decoder=nn.Linear(8, 10)))
    m.decoder.weight = m.embeddings.weight
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn_like(p) * 0.5)
    return m


def set_grads(models, step):
    "The same gradients on every model: large on weight matrices (clipping triggers), small on the rest; their norms."
    g = torch.Generator().manual_seed(1000 + step)
    norms = []
    for ps in zip(*(m.parameters() for m in models)):
        grad = torch.randn(ps[0].shape, generator=g) * (5. if ps[0].dim() > 1 else 0.05)
        norms.append(grad.norm().item())
        for p in ps: p.grad = grad.clone()
    return norms


def max_diff(a, b): return max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))


def run_pair(make_ours, make_seed, steps=STEPS, check=None):
    "Step both optimizers on copies of one model with the same gradients; return the max parameter difference per step."
    m_ours, m_seed, start = tiny_model(), tiny_model(), tiny_model()
    o, s = make_ours(ours.no_decay_groups(m_ours)), make_seed(ours.no_decay_groups(m_seed))
    diffs = []
    for i in range(steps):
        norms = set_grads([m_ours, m_seed], i)
        assert max(norms) > 1.0 and min(norms) < 1.0  # some gradients are clipped, some are not
        o.step()
        s.step()
        assert max(p.grad.norm().item() for p in m_ours.parameters()) <= 1.0 + 1e-5  # clipping did act
        diffs.append(max_diff(m_ours, m_seed))
        if check: check(o, s)
    print(f" [parameters moved up to {max_diff(m_ours, start):.3g}]", end="")
    return diffs


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_matches_seed_every_schedule(schedule):
    kw = dict(lr=LR, warmup=0.1, t_total=STEPS, schedule=schedule, weight_decay=0.01, max_grad_norm=1.0)
    def same_state(o, s):
        assert o.get_lr() == s.get_lr()
        for p_o, p_s in zip(o.state, s.state):
            for k in ("next_m", "next_v"): assert torch.equal(o.state[p_o][k], s.state[p_s][k])
            assert o.state[p_o]["step"] == s.state[p_s]["step"]
    diffs = run_pair(lambda g: ours.BertAdam(g, **kw), lambda g: seed.BertAdam(g, **kw), check=same_state)
    print(f"\n{schedule}: max |ours - seed| over {STEPS} steps, per step: {max(diffs):.3g}")
    assert max(diffs) <= 1e-6


@pytest.mark.parametrize("cls", ["WarmupCosineWithHardRestartsSchedule", "WarmupCosineWithWarmupRestartsSchedule",
                                 "WarmupLinearSchedule", "ConstantLR"])
def test_matches_seed_schedule_objects(cls):
    kw = dict(warmup=0.05, t_total=STEPS, **({"cycles": 3} if "Restarts" in cls else {}))
    diffs = run_pair(lambda g: ours.BertAdam(g, lr=LR, schedule=getattr(ours, cls)(**kw)),
                     lambda g: seed.BertAdam(g, lr=LR, schedule=getattr(seed, cls)(**kw)))
    print(f"\n{cls}: max |ours - seed| = {max(diffs):.3g}")
    assert max(diffs) <= 1e-6


@pytest.mark.parametrize("schedule", ["warmup_linear", "warmup_cosine"])
def test_past_t_total(schedule, caplog):
    "t_total=10, 20 steps: the learning rate stays >= 0, a warning says why, and the seed agrees."
    kw = dict(lr=LR, warmup=0.1, t_total=10, schedule=schedule)
    lrs = []
    with caplog.at_level(logging.WARNING, logger="bert_nb.optimization"):
        diffs = run_pair(lambda g: ours.BertAdam(g, **kw), lambda g: seed.BertAdam(g, **kw),
                         check=lambda o, s: lrs.append(o.get_lr()))
    assert min(min(l) for l in lrs) >= 0
    msgs = [r.getMessage() for r in caplog.records if r.name == "bert_nb.optimization"]
    assert any("Training beyond specified 't_total'" in m for m in msgs), msgs
    print(f"\n{schedule} past t_total: min lr {min(min(l) for l in lrs) + 0.0:.3g}, "
          f"max |ours - seed| = {max(diffs):.3g}")
    assert max(diffs) <= 1e-6


def _steps(model, opt, steps):
    for i in steps:
        set_grads([model], i)
        opt.step()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_state_dict_round_trip(schedule):
    "10 steps, save (torch.save / torch.load with weights_only), load into a new optimizer, 10 more == 20 straight."
    kw = dict(lr=LR, warmup=0.1, t_total=STEPS, schedule=schedule)
    straight = tiny_model()
    o = ours.BertAdam(ours.no_decay_groups(straight), **kw)
    _steps(straight, o, range(20))
    first = tiny_model()
    o1 = ours.BertAdam(ours.no_decay_groups(first), **kw)
    _steps(first, o1, range(10))
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": o1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)  # weights_only=True, torch's default
    assert set(ckpt["optimizer"]["state"][0]) == {"next_m", "next_v", "step"}
    resumed = tiny_model()
    resumed.load_state_dict(ckpt["model"])
    o2 = ours.BertAdam(ours.no_decay_groups(resumed), lr=LR, schedule="none")  # the schedule comes from the checkpoint
    o2.load_state_dict(ckpt["optimizer"])
    _steps(resumed, o2, range(10, 20))
    for a, b in zip(straight.parameters(), resumed.parameters()): assert torch.equal(a, b)
    assert o2.get_lr() == o.get_lr()


def test_loads_seed_state_dict():
    "The seed's optimizer state (next_m, next_v, step) resumes in ours: seed 10 + ours 10 == seed 20."
    kw = dict(lr=LR, warmup=0.1, t_total=STEPS)
    straight = tiny_model()
    s = seed.BertAdam(ours.no_decay_groups(straight), **kw)
    _steps(straight, s, range(20))
    m = tiny_model()
    s1 = seed.BertAdam(ours.no_decay_groups(m), **kw)
    _steps(m, s1, range(10))
    o = ours.BertAdam(ours.no_decay_groups(m), lr=LR)
    o.load_state_dict(copy.deepcopy(s1.state_dict()))
    _steps(m, o, range(10, 20))
    print(f"\nseed state resumed in ours: max |diff| = {max_diff(straight, m):.3g}")
    assert max_diff(straight, m) <= 1e-6


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_adamw_lambda_matches_bertadam_lr(schedule):
    "AdamW + get_scheduler: the multiplier at every step equals BertAdam's get_lr() / lr (past t_total too)."
    m_b, m_a = tiny_model(), tiny_model()
    b = ours.BertAdam(ours.no_decay_groups(m_b), lr=LR, warmup=0.1, t_total=15, schedule=schedule)
    a = torch.optim.AdamW(ours.no_decay_groups(m_a), lr=LR)
    sched = ours.get_scheduler(a, schedule, warmup=0.1, t_total=15)
    for i in range(STEPS):
        set_grads([m_b, m_a], i)
        b.step()
        a.step()
        sched.step()
        bert = [lr / LR for lr in b.get_lr()]
        assert set(bert) == {sched.get_last_lr()[0] / LR} == {sched.get_last_lr()[1] / LR}
        assert sched.lr_lambdas[0](i + 1) == b.param_groups[0]["schedule"].get_lr(i + 1)
    assert ours.schedule_lambda(schedule, 0.1, 15)(3) == seed.SCHEDULES[schedule](warmup=0.1, t_total=15).get_lr(3)


@pytest.mark.parametrize("kw, named", [
    (dict(lr=-0.001), "lr=-0.001"), (dict(lr=1e-3, b1=1.0), "b1=1.0"), (dict(lr=1e-3, b1=-0.5), "b1=-0.5"),
    (dict(lr=1e-3, b2=1.5), "b2=1.5"), (dict(lr=1e-3, b2=-0.1), "b2=-0.1"), (dict(lr=1e-3, e=-1e-8), "e=-1e-08"),
    (dict(lr=1e-3, weight_decay=-0.1), "weight_decay=-0.1"),
    (dict(lr=1e-3, schedule="cosine"),
     "schedule='cosine' is not a known schedule: use one of [None, 'none', 'warmup_cosine'"),
    (dict(lr=1e-3, warmup=1.0, t_total=100), "warmup=1.0"), (dict(lr=1e-3, warmup=-0.5, t_total=100), "warmup=-0.5"),
    (dict(lr=1e-3, warmup=0.1, t_total=0), "t_total=0")])
def test_bad_arguments_named(kw, named):
    with pytest.raises(ValueError) as e: ours.BertAdam([nn.Parameter(torch.ones(2))], **kw)
    assert named in str(e.value)


def test_schedule_multipliers():
    "A schedule is its own `LambdaLR` function; the constant schedules give 1; t_total=0 is refused, naming it."
    s = ours.WarmupLinearSchedule(warmup=0.1, t_total=100)
    assert s(5) == s.get_lr(5)
    assert ours.WarmupConstantSchedule(warmup=0.1, t_total=100).get_lr(90) == 1.
    assert ours.ConstantLR(warmup=0.1, t_total=100).get_lr(5) == 1.
    with pytest.raises(ValueError, match="t_total=0"): ours.WarmupLinearSchedule(warmup=0.1, t_total=0)


def test_bad_schedule_arguments_named():
    with pytest.raises(ValueError, match="cycles=0.5"):
        ours.WarmupCosineWithHardRestartsSchedule(t_total=10, cycles=0.5)
    with pytest.raises(ValueError, match="warmup=0.5 \\* cycles=3"):
        ours.WarmupCosineWithWarmupRestartsSchedule(warmup=0.5, t_total=10, cycles=3)
    with pytest.raises(ValueError, match="schedule='linear'"):
        ours.get_scheduler(torch.optim.AdamW([nn.Parameter(torch.ones(1))]), "linear")


def test_no_decay_groups():
    "The seed examples' groups, without frozen parameters, a tied parameter once."
    m = tiny_model()
    m.out.bias.requires_grad_(False)
    named = [(n, p) for n, p in m.named_parameters(remove_duplicate=False)]
    assert len(named) == len(list(m.parameters())) + 1  # the tie
    nd = ['bias', 'LayerNorm.bias', 'LayerNorm.weight']
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    seed_groups = [{'params': [p for n, p in trainable if not any(x in n for x in nd)], 'weight_decay': 0.01},
                   {'params': [p for n, p in trainable if any(x in n for x in nd)], 'weight_decay': 0.0}]
    groups = ours.no_decay_groups(m)
    assert [[id(p) for p in g['params']] for g in groups] == [[id(p) for p in g['params']] for g in seed_groups]
    assert [g['weight_decay'] for g in groups] == [0.01, 0.0]
    ids = [id(p) for g in groups for p in g['params']]
    assert len(ids) == len(set(ids)) == len([p for p in m.parameters() if p.requires_grad])
    assert id(m.out.bias) not in ids and id(m.embeddings.weight) in ids
    no_decay = ours.no_decay_groups(m, weight_decay=0.1, no_decay=('LayerNorm',))[1]
    assert no_decay['params'] == [m.LayerNorm.weight, m.LayerNorm.bias]


# ---- LAMB ----
def test_lamb_step_by_hand():
    w = nn.Parameter(torch.tensor([[1., -2.], [2., 4.]]))
    opt = ours.Lamb([w], lr=0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.2)
    m = v = torch.zeros(2, 2)
    x = w.detach().clone()
    for t, g in enumerate([torch.tensor([[0.5, 1.], [-1., 2.]]), torch.tensor([[1., 0.], [3., -1.]])], 1):
        w.grad = g.clone()
        opt.step()
        m, v = 0.8 * m + 0.2 * g, 0.9 * v + 0.1 * g * g
        u = (m / (1 - 0.8 ** t)) / ((v / (1 - 0.9 ** t)).sqrt() + 1e-6) + 0.2 * x
        x = x - 0.05 * x.norm() / u.norm() * u
        torch.testing.assert_close(w.detach(), x)
    assert opt.state_dict()["state"][0]["step"] == 2


def test_lamb_is_registered_where_the_registry_is():
    "`--optimizer lamb` is registered in bert_nb.optimization, where OPTIMIZERS lives; no other module adds optimizers."
    import argparse, re
    from pathlib import Path
    from bert_nb import Lamb
    from bert_nb.trainer import add_training_arguments
    writes = re.compile(r"OPTIMIZERS\[[^\]]+\]\s*=|OPTIMIZERS\.(update|setdefault)\(")
    modules = Path(ours.__file__).parent.glob("*.py")
    assert sorted(p.name for p in modules if writes.search(p.read_text())) == ["optimization.py"]
    args = add_training_arguments(argparse.ArgumentParser()).parse_args(["--output_dir", "o", "--optimizer", "lamb"])
    assert args.optimizer == "lamb"
    opt = ours.OPTIMIZERS["lamb"]([nn.Parameter(torch.ones(2))], argparse.Namespace(learning_rate=0.5))
    assert type(opt) is ours.Lamb is Lamb and opt.defaults["lr"] == 0.5


@pytest.mark.parametrize("schedule", ["warmup_linear", "warmup_cosine", "none"])
def test_multi_tensor_update_is_the_loop_bit_for_bit(schedule):
    "BertAdam(foreach=True), the GPU default, gives the per-tensor loop's parameters and state exactly (CPU)."
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.Embedding(3, 16), nn.Linear(16, 2))
    b = copy.deepcopy(a)
    kw = dict(lr=1e-2, warmup=0.1, t_total=20, schedule=schedule, max_grad_norm=0.5)
    oa = ours.BertAdam(ours.no_decay_groups(a), foreach=False, **kw)
    ob = ours.BertAdam(ours.no_decay_groups(b), foreach=True, **kw)
    for _ in range(8):
        x = torch.randn(5, 16)
        for m, o in ((a, oa), (b, ob)):
            (m[3](m[1](m[0](x))) * 3).square().sum().backward()
            o.step()
            o.zero_grad()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    for p, q in zip(a.parameters(), b.parameters()):
        sa, sb = oa.state[p], ob.state[q]  # the embedding, unused, has no gradient and no state in either
        assert bool(sa) == bool(sb)
        if not sa: continue
        assert sa["step"] == sb["step"] and torch.equal(sa["next_m"], sb["next_m"]) and torch.equal(sa["next_v"], sb["next_v"])
