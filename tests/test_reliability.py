"""Nothing silent, nothing lost: each test reproduces a fault found by probing bert_nb as a careful user and a tester
would (two runs in one folder, stale checkpoints, special output files, empty data, signals, bad bytes, numbers that
mislead, tracebacks), then checks the behaviour that replaced it."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from bert_nb.config import BertConfig
from bert_nb.demo import DEMO_DATA_DIR
from bert_nb.hub import OutputDirInUse, atomic_write, check_writable, hold_output_dir
from bert_nb.modeling import BertModel
from bert_nb.tokenization import BertTokenizer
from bert_nb.trainer import Trainer, latest_checkpoint
from test_trainer import TOY, _free_port, params, read_metrics, targs, toy_data, toy_model

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
ENV.update(OMP_NUM_THREADS="1", BERT_NB_NO_PROGRESS="1")


def cli(*args, stdin=None, timeout=300, **kw):
    "Run the installed `bert_nb` console script."
    return subprocess.run([str(BIN / "bert_nb"), *map(str, args)], input=stdin, capture_output=True, timeout=timeout,
                          env=ENV, cwd=kw.get("cwd", ROOT), text=isinstance(stdin, str) or stdin is None)


def one_error_line(r, code, *contains):
    "Exit status `code`, no traceback, and the last line of stderr is the one error line, holding `contains`."
    err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode()
    assert r.returncode == code, (r.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    for c in contains: assert c in last, (c, last)
    return last


# ---- 1. one run per output folder ----

HOLDER = "import sys, time\nfrom bert_nb.hub import hold_output_dir\nwith hold_output_dir(sys.argv[1]):\n" \
         "    print('held', flush=True)\n    time.sleep(120)\n"


def _hold(path):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_run_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = _hold(out)
    try:
        with pytest.raises(OutputDirInUse, match=f"output folder {out} is in use by another run \\(pid {holder.pid} on "):
            Trainer(toy_model(), targs(tmp_path, "out"), toy_data()).train()
        assert os.listdir(out) == [".bert_nb.lock"]  # the refused run wrote nothing
        r = cli("run_classifier", "--task_name", "mrpc", "--data_dir", DEMO_DATA_DIR, "--bert_model", "bert-base-uncased",
                "--output_dir", out, "--do_train", "--do_lower_case")
        one_error_line(r, 1, "bert_nb run_classifier: error:", f"is in use by another run (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    res = Trainer(toy_model(), targs(tmp_path, "out", max_steps=3), toy_data()).train()  # SIGKILLed holder: taken over
    assert res["step"] == 3 and latest_checkpoint(out).name == "checkpoint-3"
    assert not (out / ".bert_nb.lock").exists()


SLOW_RUN = TOY + """
import sys, time
from bert_nb.trainer import Trainer, TrainingArgs
args = TrainingArgs(sys.argv[1], train_batch_size=8, num_train_epochs=2, progress=False, plot=False, save_steps=4,
                    logging_steps=1)
res = Trainer(toy_model(seed=int(sys.argv[2])), args, toy_data(), callbacks=[lambda tr: time.sleep(0.15)]).train()
print(res["step"])
"""


def test_two_runs_started_together_one_wins_and_its_checkpoints_are_whole(tmp_path):
    out = tmp_path / "shared"
    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN)
    runs = [subprocess.Popen([sys.executable, str(script), str(out), str(seed)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**ENV, "PYTHONPATH": str(ROOT / "tests")})
            for seed in (1, 2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in runs]
    codes = sorted(code for code, *_ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser_err = next(err for code, _, err in results if code != 0)
    assert "is in use by another run" in loser_err
    winner = next(i for i, (code, *_) in enumerate(results) if code == 0) + 1
    final = torch.load(out / "checkpoint-16" / "model.pt", weights_only=True)
    state = json.loads((out / "checkpoint-16" / "trainer_state.json").read_text())
    assert state["step"] == 16 and len(read_metrics(out)) == 16  # one run's metrics, not interleaved
    assert not torch.equal(final["lin.weight"], toy_model(seed=winner).state_dict()["lin.weight"])  # trained


# ---- 2. --overwrite_output_dir, --save_total_limit ----

def test_overwrite_clears_the_previous_runs_checkpoints_and_metrics(tmp_path):
    Trainer(toy_model(), targs(tmp_path, "o", max_steps=10, save_steps=5), toy_data()).train()
    assert latest_checkpoint(tmp_path / "o").name == "checkpoint-10"
    new = toy_model(seed=3)
    res = Trainer(new, targs(tmp_path, "o", max_steps=4, overwrite_output_dir=True), toy_data()).train()
    assert sorted(p.name for p in (tmp_path / "o").glob("*checkpoint-*")) == ["checkpoint-4"]
    assert [r["step"] for r in read_metrics(tmp_path / "o")] == [1, 2, 3, 4]
    again = toy_model(seed=5)  # resume 'latest' now finds this run's checkpoint: nothing left to do
    res2 = Trainer(again, targs(tmp_path, "o", max_steps=4, resume_from="latest"), toy_data()).train()
    assert res2["step"] == 4 and torch.equal(params(again), params(new))
    assert res2["train_loss"] == pytest.approx(res["train_loss"], abs=1e-6) and res2["train_loss"] > 0


def test_save_total_limit_keeps_the_newest(tmp_path):
    Trainer(toy_model(), targs(tmp_path, "o", max_steps=12, save_steps=3, save_total_limit=2), toy_data()).train()
    assert sorted(p.name for p in (tmp_path / "o").glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-9"]


# ---- 3. outputs that are links, FIFOs, devices; outputs that cannot be written ----

def test_atomic_write_goes_through_links_and_into_fifos_and_devices(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    (tmp_path / "link.txt").symlink_to(target)
    atomic_write(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "new"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    atomic_write(fifo, "through the pipe")
    reader.join(10)
    assert got == ["through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    atomic_write("/dev/null", "gone")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # still the device, not a regular file


def test_commands_write_to_stdout_and_through_symlinks(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat.\nA dog ran in the park.\n" * 20)
    r = cli("train_vocab", "--input_file", text, "--vocab_file", "/dev/stdout", "--vocab_size", "40")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert os.path.islink("/dev/stdout")  # not replaced by a regular file (as root, a rename would)
    (tmp_path / "vocab.txt").write_text("stale\n")
    (tmp_path / "vocab_link.txt").symlink_to(tmp_path / "vocab.txt")
    assert cli("train_vocab", "--input_file", text, "--vocab_file", tmp_path / "vocab_link.txt", "--vocab_size", "40").returncode == 0
    assert (tmp_path / "vocab_link.txt").is_symlink() and (tmp_path / "vocab.txt").read_text().startswith("[PAD]\n")


def test_unwritable_output_is_named_before_the_work(tmp_path, vocab_path):
    (tmp_path / "afile").write_text("x")
    bad = tmp_path / "afile" / "out.npy"  # a folder that is a file: no one can write there, not even root
    with pytest.raises(OSError, match=f"cannot write {bad}") as e:
        check_writable(bad)
    assert ".tmp" not in str(e.value)
    started = time.time()
    r = cli("create_pretraining_data", "--input_file", tmp_path / "does_not_matter.txt", "--output_file", bad,
            "--vocab_file", vocab_path)
    assert r.returncode == 1 and f"cannot write {bad}" in r.stderr and time.time() - started < 60
    r = cli("train_vocab", "--input_file", tmp_path / "afile", "--vocab_file", tmp_path / "afile" / "vocab.txt")
    assert r.returncode == 1 and "cannot write" in r.stderr and ".tmp" not in r.stderr


# ---- 4. every training loop ends; signals save and exit 130 / 143 ----

def test_empty_training_set_is_an_error_whatever_max_steps_says(tmp_path):
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 8), torch.zeros(0))
    for kw in (dict(max_steps=5), {}):
        with pytest.raises(ValueError, match="the training set is empty"):
            Trainer(toy_model(), targs(tmp_path, f"e{len(kw)}", **kw), empty).train()


def test_run_squad_on_empty_data_stops_with_one_line(tmp_path, tiny_bert_dir):
    (tmp_path / "empty.json").write_text(json.dumps({"version": "1.1", "data": []}))
    r = cli("run_squad", "--bert_model", tiny_bert_dir, "--output_dir", tmp_path / "o", "--do_train", "--train_file",
            tmp_path / "empty.json", "--max_steps", "3", "--no_cuda", timeout=120)
    one_error_line(r, 1, "the training set is empty")


def _wait_for(path, timeout=120):
    t = time.time()
    while not path.exists():
        assert time.time() - t < timeout, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_training_saves_then_exits(tmp_path, tiny_bert_dir, sig, code):
    out = tmp_path / "o"
    p = subprocess.Popen([str(BIN / "bert_nb"), "run_classifier", "--task_name", "mrpc", "--data_dir", str(DEMO_DATA_DIR),
                          "--bert_model", str(tiny_bert_dir), "--output_dir", str(out), "--do_train", "--do_lower_case",
                          "--max_seq_length", "32", "--train_batch_size", "4", "--max_steps", "100000", "--logging_steps", "1",
                          "--no_progress"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    _wait_for(out / "metrics.jsonl")
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    last = one_error_line(subprocess.CompletedProcess(p.args, p.returncode, "", err), code,
                          f"interrupted by {signal.Signals(sig).name}", "resume with --resume_from latest")
    ck = latest_checkpoint(out)
    assert ck is not None and str(ck) in last and (ck / "model.pt").exists()


def test_signal_before_training_exits_with_one_line(tmp_path, tiny_bert_dir):
    "SIGTERM while the data is read: nothing to save, exit 143 and one line."
    p = subprocess.Popen([str(BIN / "bert_nb"), "tokenize", "--bert_model", str(tiny_bert_dir)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    p.stdin.write("hello world\n")
    p.stdin.flush()
    assert p.stdout.readline() == "hello world\n"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    one_error_line(subprocess.CompletedProcess(p.args, p.returncode, "", err), 143, "interrupted by SIGTERM")


# ---- 5. input text is UTF-8 or an error naming the file ----

def test_tokenize_refuses_bytes_that_are_not_utf8(tmp_path):
    one_error_line(cli("tokenize", stdin=b"caf\xe9\n"), 1, "<stdin>, line 1: not UTF-8 text")
    (tmp_path / "latin1.txt").write_bytes(b"fine\ncaf\xe9\n")
    one_error_line(cli("tokenize", tmp_path / "latin1.txt"), 1, f"{tmp_path / 'latin1.txt'}, line 2: not UTF-8 text")
    r = cli("tokenize", stdin="café\n")
    assert (r.returncode, r.stdout) == (0, "cafe\n")


def test_tokenize_into_a_closed_pipe_is_quiet():
    r = subprocess.run(f"yes 'hello world' | head -n 20000 | {BIN / 'bert_nb'} tokenize | head -n 1", shell=True,
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.stdout == "hello world\n" and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


# ---- 6. numbers that mean what they say ----

def _stop_at(n):
    def cb(tr):
        if tr.state["step"] == n: raise KeyboardInterrupt
    return cb


def test_train_loss_covers_the_whole_run_across_resumes(tmp_path):
    kw = dict(num_train_epochs=3, logging_steps=4)
    full = Trainer(toy_model(), targs(tmp_path, "full", **kw), toy_data()).train()
    with pytest.raises(KeyboardInterrupt):
        Trainer(toy_model(), targs(tmp_path, "run", **kw), toy_data(), callbacks=[_stop_at(10)]).train()
    resumed = Trainer(toy_model(), targs(tmp_path, "run", resume_from="latest", **kw), toy_data()).train()
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
    finished = Trainer(toy_model(), targs(tmp_path, "run", resume_from="latest", **kw), toy_data()).train()
    assert finished["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)  # not 0.0


DDP_LOSS = TOY + """
import argparse, json, sys
import torch.distributed as dist
from bert_nb.trainer import Trainer, TrainingArgs, add_training_arguments
p = add_training_arguments(argparse.ArgumentParser()); p.add_argument("--result")
ns = p.parse_args()
tr = Trainer(toy_model(), TrainingArgs.from_namespace(ns), toy_data())
res = tr.train()
json.dump(res["train_loss"], open(f"{ns.result}.{tr.rank}", "w"))
dist.destroy_process_group()
"""


def test_train_loss_under_ddp_covers_every_rank(tmp_path):
    script = tmp_path / "ddp_loss.py"
    script.write_text(DDP_LOSS)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(_free_port()), str(script), "--output_dir", str(tmp_path / "o"), "--no_cuda", "--no_progress",
                        "--no_plot", "--train_batch_size", "4", "--num_train_epochs", "1", "--logging_steps", "1",
                        "--result", str(tmp_path / "loss")], capture_output=True, text=True, timeout=180,
                       env={**ENV, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"loss.{i}").read_text()) for i in (0, 1)]
    logged = [m["loss"] for m in read_metrics(tmp_path / "o")]  # each the mean over both ranks' micro-batches
    assert ranks[0] == ranks[1] == pytest.approx(sum(logged) / len(logged), rel=1e-6)


@pytest.mark.parametrize("change,named", [(dict(max_steps=20), "steps 10 -> 20"),
                                          (dict(train_batch_size=16), "train_batch_size 8 -> 16")])
def test_resume_with_another_budget_or_batch_size_is_refused(tmp_path, change, named):
    with pytest.raises(KeyboardInterrupt):
        Trainer(toy_model(), targs(tmp_path, "o", max_steps=10), toy_data(), callbacks=[_stop_at(4)]).train()
    args = targs(tmp_path, "o", **{**dict(max_steps=10, resume_from="latest"), **change})
    with pytest.raises(ValueError, match=f"changes {named}.*resume with the same flags"):
        Trainer(toy_model(), args, toy_data()).train()


# ---- 7. errors instead of tracebacks ----

def _squad(qas):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "The cat sat on the mat.", "qas": qas}]}]}


def test_evaluate_squad_refuses_what_is_not_its_layout(tmp_path):
    data = tmp_path / "dev.json"
    data.write_text(json.dumps(_squad([{"id": "q1", "question": "Where?", "answers": [{"text": "the mat", "answer_start": 15}]}])))
    for name, preds, msg in (("list.json", ["the mat"], "is not SQuAD's prediction layout"),
                             ("nbest.json", {"q1": [{"text": "the mat", "probability": 1.0}]}, "looks like an n-best file")):
        (tmp_path / name).write_text(json.dumps(preds))
        one_error_line(cli("evaluate_squad", data, tmp_path / name), 1, msg)
    (tmp_path / "p.json").write_text(json.dumps({"q1": "the mat"}))
    (tmp_path / "empty.json").write_text(json.dumps({"version": "1.1", "data": []}))
    one_error_line(cli("evaluate_squad", tmp_path / "empty.json", tmp_path / "p.json"), 1, "holds no questions")
    (tmp_path / "noid.json").write_text(json.dumps(_squad([{"question": "Where?", "answers": []}])))
    one_error_line(cli("evaluate_squad", tmp_path / "noid.json", tmp_path / "p.json"), 1, "qas[0]: missing 'id'")
    r = cli("evaluate_squad", data, tmp_path / "p.json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"exact_match": 100.0, "f1": 100.0}


def test_run_squad_predicts_when_only_some_questions_have_answers(tmp_path, tiny_bert_dir):
    qas = [{"id": "q1", "question": "Where did the cat sit?", "answers": [{"text": "the mat", "answer_start": 15}]},
           {"id": "q2", "question": "What sat?"}]
    (tmp_path / "dev.json").write_text(json.dumps(_squad(qas)))
    r = cli("run_squad", "--bert_model", tiny_bert_dir, "--output_dir", tmp_path / "o", "--do_predict", "--predict_file",
            tmp_path / "dev.json", "--max_seq_length", "64", "--doc_stride", "32", "--no_cuda", "--no_progress", timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "1 of 2 questions have no answers" in r.stderr
    assert set(json.loads((tmp_path / "o" / "predictions.json").read_text())) == {"q1", "q2"}


def test_a_sequence_of_no_tokens_is_refused():
    m = BertModel(BertConfig(99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37))
    with pytest.raises(ValueError, match=r"input_ids has shape \(2, 0\): a sequence needs at least one token"):
        m(torch.zeros(2, 0, dtype=torch.long))


def test_vocabulary_without_unk_or_with_a_bom(tmp_path):
    (tmp_path / "no_unk.txt").write_text("[PAD]\n[CLS]\n[SEP]\nthe\n")
    with pytest.raises(ValueError, match="no_unk.txt: the vocabulary has no \\[UNK\\] token"):
        BertTokenizer(tmp_path / "no_unk.txt")
    (tmp_path / "bom.txt").write_bytes("\ufeff[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n".encode())
    tok = BertTokenizer(tmp_path / "bom.txt")
    assert tok.vocab["[PAD]"] == 0 and tok.convert_tokens_to_ids(tok.tokenize("the cat")) == [4, 1]
    (tmp_path / "latin1.txt").write_bytes(b"[PAD]\n[UNK]\ncaf\xe9\n")
    with pytest.raises(ValueError, match="latin1.txt, line 3: not UTF-8 text"):
        BertTokenizer(tmp_path / "latin1.txt")


def test_config_names_a_missing_size_and_keeps_unknown_keys(tmp_path):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"vocab_size": 99, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}))
    with pytest.raises(ValueError, match=f"{f}: no 'hidden_size'"):
        BertConfig.from_json_file(f)
    f.write_text(json.dumps({"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "intermediate_size": 37, "tokenizer_class": "BertTokenizer", "classifier_dropout": None,
                             "some_new_key": [1, 2]}))
    c = BertConfig.from_json_file(f)
    assert (c.tokenizer_class, c.to_dict()["some_new_key"]) == ("BertTokenizer", [1, 2])


def test_torchrun_runs_the_command_as_a_module(tmp_path, tiny_bert_dir):
    "`torchrun --nproc_per_node 2 -m bert_nb run_classifier ...`: the documented way, no --no-python needed."
    out = tmp_path / "o"
    r = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "bert_nb",
                        "run_classifier", "--task_name", "mrpc", "--data_dir", str(DEMO_DATA_DIR), "--bert_model",
                        str(tiny_bert_dir), "--output_dir", str(out), "--do_train", "--do_lower_case", "--max_seq_length", "32",
                        "--train_batch_size", "4", "--max_steps", "2", "--no_progress", "--no_plot"],
                       capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert (state["step"], state["world_size"]) == (2, 2)
    assert "torchrun --nproc_per_node" in cli("--help").stdout


# ---- 8. disk ----

def test_run_pretraining_writes_the_vocabulary_beside_the_model(tmp_path, vocab_path):
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join("\n".join(f"Sentence {i} of document {d} is here." for i in range(6)) for d in range(4)))
    r = cli("create_pretraining_data", "--input_file", text, "--output_file", tmp_path / "inst.npy", "--vocab_file",
            vocab_path, "--max_seq_length", "32", "--dupe_factor", "1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "inst.vocab.txt").read_text() == Path(vocab_path).read_text()
    (tmp_path / "bert_config.json").write_text(json.dumps(dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                                              num_attention_heads=2, intermediate_size=37)))
    r = cli("run_pretraining", "--input_file", tmp_path / "inst.npy", "--output_dir", tmp_path / "o", "--bert_config_file",
            tmp_path / "bert_config.json", "--max_seq_length", "32", "--do_train", "--num_train_steps", "2",
            "--train_batch_size", "4", "--no_progress", "--no_plot", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "o" / "vocab.txt").read_text() == Path(vocab_path).read_text()
    assert BertTokenizer.from_pretrained(str(tmp_path / "o")).tokenize("hello") == ["hello"]
