"""`bert_nb run_pretraining`: BertForPreTraining trains on the trainer from create_pretraining_data's instances (loss,
MLM/NSP metrics, resume, torchrun, LAMB, continued pre-training from all-MiniLM-L6-v2). The instances themselves are
tested in tests/test_pretraining_data.py, the vocabulary trainer in tests/test_vocab.py."""
import argparse, collections, contextlib, io, json, os, shutil, socket, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bert_nb.config import BertConfig
from bert_nb.heads import BertForPreTraining
from bert_nb.hub import minilm_dir
from bert_nb.pretraining import (PreTrainingObjective, add_run_pretraining_arguments, most_common_token_baseline,
                                 pretraining_metrics, pretraining_model, predict_masked, run_pretraining)
from bert_nb.pretraining_data import (PretrainingDataset, add_create_pretraining_data_arguments,
                                      create_pretraining_data, python_docs_documents, write_documents)
from bert_nb.tokenization import BertTokenizer

SLOW = pytest.mark.skipif(not os.environ.get("BERT_NB_SLOW"),
                          reason="minutes of CPU pre-training: run with BERT_NB_SLOW=1")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def docs(): return python_docs_documents(150_000)


@pytest.fixture(scope="module")
def text_file(docs, tmp_path_factory): return write_documents(docs, tmp_path_factory.mktemp("text") / "docs.txt")


# ---- the model side ----
def tiny_config(**kw):
    return BertConfig(30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64, **kw)


@pytest.fixture(scope="module")
def data64(text_file, tmp_path_factory):
    d = tmp_path_factory.mktemp("data64")
    create_pretraining_data(text_file, d / "train.npy", minilm_dir() / "vocab.txt", max_seq_length=64,
                            max_predictions_per_seq=10, dupe_factor=2, random_seed=1)
    tiny_config().to_json_file(d / "tiny.json")
    return d


def test_objective_is_the_seeds_loss_at_masked_positions(data64):
    ds = PretrainingDataset(data64 / "train.npy")
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config(initializer_range=0.2)).eval()
    ids, types, mask, pos, mids, nsp = [torch.stack(c) for c in zip(*(ds[i] for i in range(8)))]
    out = PreTrainingObjective(model)(ids, types, mask, pos, mids, nsp)
    full = torch.full_like(ids, -1)
    for b in range(8): full[b, pos[b][mids[b] >= 0]] = mids[b][mids[b] >= 0]
    torch.testing.assert_close(out["loss"], model(ids, types, mask, full, nsp), atol=1e-5, rtol=1e-6)
    scores, nsp_scores = model(ids, types, mask)
    assert torch.equal(out["masked_lm_predictions"], scores.argmax(-1).gather(1, pos))
    torch.testing.assert_close(out["next_sentence_logits"], nsp_scores)
    at_masked = scores.gather(1, pos[..., None].expand(-1, -1, 30522))
    want = F.cross_entropy(at_masked.flatten(0, 1), mids.flatten(), ignore_index=-1, reduction="none")
    torch.testing.assert_close(out["masked_lm_losses"].flatten(), want, atol=1e-5, rtol=1e-5)
    assert set(PreTrainingObjective(model)(ids, types, mask, pos)) == {"masked_lm_predictions", "next_sentence_logits"}


def test_metrics_on_fixed_outputs():
    outs = dict(masked_lm_predictions=torch.tensor([[3, 4, 9], [5, 0, 0], [1, 2, 0]]),
                masked_lm_losses=torch.tensor([[0.5, 1.5, 0.], [2., 0, 0], [1., 1., 0]]),
                next_sentence_logits=torch.tensor([[1., 0], [0, 3], [2, 1]]))
    batches = [None] * 4 + [torch.tensor([[3, 7, -1], [5, -1, -1], [8, 2, -1]]), torch.tensor([0, 1, 1])]
    m = pretraining_metrics(outs, batches)
    assert m["masked_lm_accuracy"] == pytest.approx(3 / 5) and m["masked_lm_loss"] == pytest.approx(6 / 5)
    assert m["next_sentence_accuracy"] == pytest.approx(2 / 3)
    assert m["next_sentence_loss"] == pytest.approx(F.cross_entropy(outs["next_sentence_logits"], batches[5]).item())


def test_most_common_token_baseline(data64):
    ds = PretrainingDataset(data64 / "train.npy")
    labels = [l for i in range(len(ds)) for l in ds[i][4].tolist() if l >= 0]
    top, n = collections.Counter(labels).most_common(1)[0]
    half = torch.utils.data.Subset(ds, range(len(ds) // 2, len(ds)))
    held = [l for i in half.indices for l in ds[i][4].tolist() if l >= 0]
    assert most_common_token_baseline(ds, ds) == (top, pytest.approx(n / len(labels)))
    assert most_common_token_baseline(ds, half) == (top, pytest.approx(held.count(top) / len(held)))


PARSER = add_run_pretraining_arguments(argparse.ArgumentParser())


def rp_flags(data, out, *extra):
    return ["--input_file", str(data / "train.npy"), "--bert_config_file", str(data / "tiny.json"),
            "--output_dir", str(out), "--max_seq_length", "64", "--max_predictions_per_seq", "10", "--no_progress",
            "--no_cuda", *map(str, extra)]


def metrics(out): return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_tiny_model_learns(data64, tmp_path):
    out = tmp_path / "run"
    res = run_pretraining(PARSER.parse_args(rp_flags(data64, out, "--do_train", "--do_eval", "--train_batch_size", 16,
                                                     "--learning_rate", "2e-3", "--num_train_steps", 30,
                                                     "--num_warmup_steps", 3, "--logging_steps", 5, "--eval_steps", 15,
                                                     "--vocab_file", minilm_dir() / "vocab.txt")))
    losses = [r["loss"] for r in metrics(out) if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] - 1.5, losses
    assert res["global_step"] == 30 and 0 <= res["eval_masked_lm_accuracy"] <= 1
    assert 0 <= res["eval_next_sentence_accuracy"] <= 1
    assert [r["step"] for r in metrics(out) if "eval_masked_lm_accuracy" in r] == [15, 30]
    written = dict(l.split(" = ") for l in (out / "eval_results.txt").read_text().splitlines())
    assert sorted(written) == ["eval_loss", "eval_masked_lm_accuracy", "eval_masked_lm_loss",
                               "eval_most_common_token_accuracy", "eval_next_sentence_accuracy",
                               "eval_next_sentence_loss", "global_step", "loss"]
    assert {"config.json", "model.safetensors", "vocab.txt", "pretraining.png", "checkpoint-30"} <= \
        {p.name for p in out.iterdir()}
    # evaluation alone, of the saved model, on the same held-out instances (the last 5%): the same numbers
    n = len(PretrainingDataset(data64 / "train.npy"))
    k = round(n * 0.05)
    np.save(tmp_path / "held.npy", np.load(data64 / "train.npy")[n - k:])
    again = run_pretraining(PARSER.parse_args(["--input_file", str(tmp_path / "held.npy"),
                                               "--init_checkpoint", str(out), "--output_dir", str(tmp_path / "eval"),
                                               "--max_seq_length", "64", "--max_predictions_per_seq", "10",
                                               "--do_eval", "--no_progress", "--no_cuda"]))
    assert again["eval_masked_lm_accuracy"] == pytest.approx(res["eval_masked_lm_accuracy"], abs=1e-6)
    assert again["eval_next_sentence_loss"] == pytest.approx(res["eval_next_sentence_loss"], abs=1e-5)


def test_checkpoint_and_resume_equal_one_run(data64, tmp_path):
    from safetensors.torch import load_file
    common = ["--do_train", "--train_batch_size", 8, "--learning_rate", "1e-3", "--num_train_steps", 12,
              "--save_checkpoints_steps", 6, "--logging_steps", 3]
    run_pretraining(PARSER.parse_args(rp_flags(data64, tmp_path / "whole", *common)))
    assert (tmp_path / "whole" / "checkpoint-6").is_dir()
    (tmp_path / "resumed").mkdir()
    # as if stopped after step 6
    shutil.copytree(tmp_path / "whole" / "checkpoint-6", tmp_path / "resumed" / "checkpoint-6")
    run_pretraining(PARSER.parse_args(rp_flags(data64, tmp_path / "resumed", *common, "--resume_from", "latest")))
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in metrics(tmp_path / "resumed") if r["step"] > 6] == \
        [r["loss"] for r in metrics(tmp_path / "whole") if r["step"] > 6]


def test_run_pretraining_refuses_bad_input(data64, tmp_path):
    err = io.StringIO()
    def run(*argv):  # through the command line, which turns an error into one line and exit status 1
        from bert_nb.cli import main
        with contextlib.redirect_stderr(err): return main(["run_pretraining", *[str(a) for a in argv]])
    assert run(*rp_flags(data64, tmp_path / "o")) == 1 and "At least one of `do_train` or `do_eval`" in err.getvalue()
    flags = rp_flags(data64, tmp_path / "o", "--do_train")
    assert run(*[f if f != "64" else "128" for f in flags]) == 1
    assert "holds instances of max_seq_length=64, max_predictions_per_seq=10, not 128 and 10" in err.getvalue()
    assert run(*[f for f in flags if f not in ("--bert_config_file", str(data64 / "tiny.json"))]) == 1
    assert "pass --bert_config_file (to pre-train a new model) or --init_checkpoint" in err.getvalue()
    small = BertConfig(1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    small.to_json_file(tmp_path / "small.json")
    assert run(*[f if f != str(data64 / "tiny.json") else str(tmp_path / "small.json") for f in flags]) == 1
    assert "but the model's vocab_size is 1000: were the instances made with another vocabulary?" in err.getvalue()
    assert not (tmp_path / "o").exists()


def test_google_flags_parse():
    a = PARSER.parse_args("--input_file a.npy,b.npy --output_dir o --bert_config_file c.json --init_checkpoint m "
                          "--max_seq_length 128 --max_predictions_per_seq 20 --train_batch_size 32 "
                          "--learning_rate 1e-4 "
                          "--num_train_steps 20 --num_warmup_steps 10 --save_checkpoints_steps 5 --do_train --do_eval "
                          "--eval_batch_size 8".split())
    assert (a.num_train_steps, a.num_warmup_steps, a.save_checkpoints_steps, a.learning_rate,
            a.max_predictions_per_seq) == (20, 10, 5, 1e-4, 20)
    c = add_create_pretraining_data_arguments(argparse.ArgumentParser()).parse_args(
        "--input_file i --output_file o --vocab_file v --do_lower_case --max_seq_length 64 --max_predictions_per_seq 9 "
        "--masked_lm_prob 0.2 --random_seed 3 --dupe_factor 4 --short_seq_prob 0.3 --do_whole_word_mask".split())
    assert (c.max_seq_length, c.max_predictions_per_seq, c.masked_lm_prob, c.random_seed, c.dupe_factor,
            c.short_seq_prob) == (64, 9, 0.2, 3, 4, 0.3)
    assert c.do_lower_case and c.do_whole_word_mask
    d = add_create_pretraining_data_arguments(argparse.ArgumentParser()).parse_args(
        "--input_file i --output_file o --vocab_file v --no-do_lower_case".split())
    assert not d.do_lower_case and not d.do_whole_word_mask
    assert (d.max_seq_length, d.dupe_factor, d.random_seed) == (128, 10, 12345)


# ---- torchrun ----
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_match_one(text_file, tmp_path):
    "`torchrun --nproc_per_node 2` (gloo, CPU) with batch 4 per process = one process with batch 8: the same weights."
    from safetensors.torch import load_file
    # every instance holds exactly 3 predictions, so each process's mean loss weighs the instances as one process's does
    create_pretraining_data(text_file, tmp_path / "train.npy", minilm_dir() / "vocab.txt", max_seq_length=32,
                            max_predictions_per_seq=3, masked_lm_prob=0.9, dupe_factor=1, random_seed=2)
    assert (PretrainingDataset(tmp_path / "train.npy").field("num_masked") == 3).all()
    BertConfig(30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=32, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0).to_json_file(tmp_path / "tiny.json")
    script = tmp_path / "run.py"
    script.write_text("import argparse, sys\n"
                      "from bert_nb.pretraining import add_run_pretraining_arguments, run_pretraining_main\n"
                      "sys.exit(run_pretraining_main(add_run_pretraining_arguments(argparse.ArgumentParser())"
                      ".parse_args()))\n")
    common = ["--input_file", str(tmp_path / "train.npy"), "--bert_config_file", str(tmp_path / "tiny.json"),
              "--max_seq_length", "32", "--max_predictions_per_seq", "3", "--learning_rate", "1e-3",
              "--num_train_steps", "5", "--logging_steps", "1", "--do_train", "--no_progress", "--no_cuda", "--no_plot"]
    launcher_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env.update(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(script), *common, "--output_dir", str(tmp_path / "ddp"), "--train_batch_size", "4"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = run_pretraining(PARSER.parse_args(common + ["--output_dir", str(tmp_path / "one"),
                                                      "--train_batch_size", "8"]))
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-6000:]
    assert one["global_step"] == 5 and "global_step = 5" in log
    a, b = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert a.keys() == b.keys()
    start = BertForPreTraining(BertConfig.from_json_file(tmp_path / "tiny.json"))
    for k in a: torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=0)
    la, lb = [r["loss"] for r in metrics(tmp_path / "ddp")], [r["loss"] for r in metrics(tmp_path / "one")]
    assert len(la) == len(lb) == 5 and np.allclose(la, lb, atol=1e-4)


# ---- continued pre-training from all-MiniLM-L6-v2 ----
def test_continue_from_minilm(data64, tmp_path):
    model = pretraining_model(init_checkpoint=minilm_dir())
    rep = model.loading_report
    assert sorted(rep.newly_initialized) == ["cls.predictions.bias", "cls.predictions.transform.LayerNorm.bias",
                                             "cls.predictions.transform.LayerNorm.weight",
                                             "cls.predictions.transform.dense.bias",
                                             "cls.predictions.transform.dense.weight", "cls.seq_relationship.bias",
                                             "cls.seq_relationship.weight"]
    # the encoder, pooler and the tied decoder all load
    assert rep.missing == rep.newly_initialized and not rep.unexpected
    assert "cls.predictions.decoder.weight" in rep.loaded
    assert "task heads newly initialized: train them (7)" in str(rep)
    out = tmp_path / "minilm"
    res = run_pretraining(PARSER.parse_args(["--input_file", str(data64 / "train.npy"),
                                             "--init_checkpoint", str(minilm_dir()), "--output_dir", str(out),
                                             "--max_seq_length", "64", "--max_predictions_per_seq", "10",
                                             "--train_batch_size", "4", "--eval_batch_size", "16",
                                             "--learning_rate", "1e-4", "--num_train_steps", "3",
                                             "--holdout_fraction", "0.01", "--do_train", "--do_eval",
                                             "--no_progress", "--no_cuda", "--no_plot"]))
    assert res["global_step"] == 3 and res["eval_masked_lm_accuracy"] >= 0
    again = BertForPreTraining.from_pretrained(out)
    assert not again.loading_report.missing and again.config.hidden_size == 384 and again.config.num_hidden_layers == 6


# ---- the real thing (minutes) ----
@SLOW
def test_real_pretraining_fills_in_masked_words(tmp_path, request):
    """A small BERT pre-trained on a CPU for minutes on ~1.5 MB of Python's documentation, with a vocabulary learned
    from it: held-out MLM accuracy well above always predicting the most common piece, also where the input shows
    [MASK], and it fills in a masked word of a question."""
    from bert_nb.pretraining import masked_lm_accuracy_by_input
    from bert_nb.vocab import train_wordpiece_vocab
    torch.set_num_threads(2)
    request.addfinalizer(lambda: torch.set_num_threads(1))  # the real run takes both cores
    docs = python_docs_documents(2_500_000)
    held, train = docs[::20], [d for i, d in enumerate(docs) if i % 20]  # held-out documents: text never trained on
    write_documents(train, tmp_path / "train.txt")
    write_documents(held, tmp_path / "heldout.txt")
    n = train_wordpiece_vocab(tmp_path / "train.txt", tmp_path / "vocab.txt", vocab_size=8000)
    for name, dupe in (("train", 5), ("heldout", 1)):
        create_pretraining_data(tmp_path / f"{name}.txt", tmp_path / f"{name}.npy", tmp_path / "vocab.txt",
                                max_seq_length=32, max_predictions_per_seq=5, dupe_factor=dupe,
                                random_seed=1 + (name == "heldout"))
    BertConfig(n, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
               max_position_embeddings=128).to_json_file(tmp_path / "small.json")
    t = time.time()
    res = run_pretraining(PARSER.parse_args(["--input_file", str(tmp_path / "train.npy"),
                                             "--eval_file", str(tmp_path / "heldout.npy"),
                                             "--bert_config_file", str(tmp_path / "small.json"),
                                             "--vocab_file", str(tmp_path / "vocab.txt"),
                                             "--output_dir", str(tmp_path / "run"), "--max_seq_length", "32",
                                             "--max_predictions_per_seq", "5", "--train_batch_size", "64",
                                             "--eval_batch_size", "128", "--learning_rate", "2e-3",
                                             "--optimizer", "adamw", "--num_train_steps", "3000",
                                             "--eval_steps", "1000", "--logging_steps", "50",
                                             "--do_train", "--do_eval", "--no_progress", "--no_cuda"]))
    minutes = (time.time() - t) / 60
    acc, base = res["eval_masked_lm_accuracy"], res["eval_most_common_token_accuracy"]
    nsp = res["eval_next_sentence_accuracy"]
    print(f"held-out MLM accuracy {acc:.3f} vs most-common-token {base:.3f}; NSP accuracy {nsp:.3f}; {minutes:.1f} min")
    assert acc > 4 * base and acc > base + 0.15
    held_nsp = PretrainingDataset(tmp_path / "heldout.npy").field("next_sentence_label")
    # better than always the commoner kind of pair (only just: 64.0% vs 62.0%)
    assert nsp > max(held_nsp.mean(), 1 - held_nsp.mean())
    model = BertForPreTraining.from_pretrained(tmp_path / "run").eval()
    tok = BertTokenizer(tmp_path / "run" / "vocab.txt")
    by_kind = masked_lm_accuracy_by_input(model, PretrainingDataset(tmp_path / "heldout.npy"), tok.vocab["[MASK]"])
    print("accuracy by what the input showed:", by_kind)
    assert by_kind["[MASK]"][1] > 3 * base  # filled from the context, not copied from the input
    questions = ("If the argument is omitted, [MASK] is returned.", "Return a new [MASK] of the items.")
    answers = {q: predict_masked(model, tok, q)[0] for q in questions}
    print(answers)
    assert answers["If the argument is omitted, [MASK] is returned."][0][0] == "none"
    assert answers["Return a new [MASK] of the items."][0][0] in {"list", "sequence", "tuple", "set", "dict",
                                                                  "dictionary", "copy", "view", "iterator"}


# ---- LAMB (bert_nb.optimization) through run_pretraining ----
def test_lamb_trains_and_resumes_through_the_trainer(data64, tmp_path):
    from safetensors.torch import load_file
    common = ["--do_train", "--optimizer", "lamb", "--train_batch_size", 8, "--learning_rate", "0.1",
              "--num_train_steps", 12, "--save_checkpoints_steps", 6, "--logging_steps", 3]
    run_pretraining(PARSER.parse_args(rp_flags(data64, tmp_path / "whole", *common)))
    losses = [r["loss"] for r in metrics(tmp_path / "whole") if "loss" in r]
    # each step moves a tensor by about lr of its own norm: slow on a new model
    assert losses[-1] < losses[0] - 0.4, losses
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "whole" / "checkpoint-6", tmp_path / "resumed" / "checkpoint-6")
    run_pretraining(PARSER.parse_args(rp_flags(data64, tmp_path / "resumed", *common, "--resume_from", "latest")))
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
