"""`bert_nb create_pretraining_data` and `bert_nb run_pretraining`: the instances are Google's (compared with bert-tensorflow's
own create_pretraining_data.py), the .npy format round-trips and streams, bad input fails cleanly, and BertForPreTraining
trains on the trainer (loss, MLM/NSP metrics, resume, torchrun, continued pre-training from all-MiniLM-L6-v2)."""
import argparse, collections, contextlib, io, json, logging, os, random, shutil, socket, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bert_nb.config import BertConfig
from bert_nb.heads import BertForPreTraining
from bert_nb.hub import minilm_dir
from bert_nb.pretraining import (PreTrainingObjective, PretrainingDataset, TrainingInstance, add_create_pretraining_data_arguments,
                                 add_run_pretraining_arguments, create_masked_lm_predictions, create_pretraining_data,
                                 create_pretraining_data_main, create_training_instances, most_common_token_baseline,
                                 pretraining_metrics, pretraining_model, predict_masked, python_docs_documents, read_documents, record_dtype,
                                 run_pretraining, run_pretraining_main, write_documents, write_instances)
from bert_nb.tokenization import BertTokenizer

SLOW = pytest.mark.skipif(not os.environ.get("BERT_NB_SLOW"), reason="minutes of CPU pre-training: run with BERT_NB_SLOW=1")
FIELDS = ("tokens", "segment_ids", "masked_lm_positions", "masked_lm_labels", "is_random_next")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tok(vocab_path): return BertTokenizer(vocab_path, never_split=())


@pytest.fixture(scope="module")
def docs(): return python_docs_documents(150_000)


@pytest.fixture(scope="module")
def text_file(docs, tmp_path_factory): return write_documents(docs, tmp_path_factory.mktemp("text") / "docs.txt")


def as_rows(instances): return [[getattr(i, f) for f in FIELDS] for i in instances]


# ---- Google's create_pretraining_data.py, op for op ----
@pytest.fixture(scope="module")
def google(vocab_path):
    tf = pytest.importorskip("tensorflow", reason="comparing with Google's create_pretraining_data.py needs the `tf` extra")
    pytest.importorskip("bert", reason="bert-tensorflow: pip install 'bert_nb[tf]'")
    from absl import flags
    from bert import create_pretraining_data as cpd, tokenization
    tokenization.tf = cpd.tf = tf.compat.v1  # bert-tensorflow 1.0.4 reads files with tf.gfile (TF 1 API)
    if not flags.FLAGS.is_parsed(): flags.FLAGS.mark_as_parsed()  # its --preserve_unused_tokens flag keeps its default
    return cpd, {low: tokenization.FullTokenizer(str(vocab_path), do_lower_case=low) for low in (True, False)}


SETTINGS = {  # name: (seed, dupe_factor, short_seq_prob, max_seq_length, max_predictions_per_seq, masked_lm_prob, do_lower_case)
    "google-defaults": (12345, 2, 0.1, 128, 20, 0.15, True),
    "short-0.5-len64": (1, 3, 0.5, 64, 10, 0.2, True),
    "no-short-len32": (7, 2, 0.0, 32, 5, 0.15, True),
    "all-short-len16": (3, 2, 1.0, 16, 3, 0.3, True),
    "cased-len48": (99, 1, 0.1, 48, 8, 0.15, False),
}
COMPARED = collections.Counter()


@pytest.mark.parametrize("name", SETTINGS)
def test_instances_identical_to_googles(google, tok, vocab_path, text_file, name):
    "Same text, vocabulary and seed: every field of every instance equals what bert-tensorflow's create_training_instances makes."
    cpd, g_toks = google
    seed, dupe, short, L, P, prob, low = SETTINGS[name]
    if low: ours_tok = tok
    else:  # cased tokenization of an uncased vocabulary: odd, but it must still match Google's
        with pytest.warns(UserWarning, match="this vocabulary is uncased but do_lower_case=False"):
            ours_tok = BertTokenizer(vocab_path, do_lower_case=False, never_split=())
    theirs = cpd.create_training_instances([text_file], g_toks[low], L, dupe, short, prob, P, random.Random(seed))
    ours = create_training_instances(read_documents([text_file], ours_tok), list(ours_tok.vocab), L, dupe, short, prob, P,
                                     random.Random(seed))
    assert len(ours) == len(theirs) >= 300
    assert as_rows(ours) == as_rows(theirs)
    assert any(i.is_random_next for i in ours) and any(not i.is_random_next for i in ours)
    COMPARED[name] = len(ours)
    print(f"{name}: {len(ours)} instances identical to Google's")


def test_whole_word_mask_agrees_where_google_has_no_such_flag(google, tok, docs, tmp_path):
    """bert-tensorflow 1.0.4 predates --do_whole_word_mask. On text whose words are single pieces every word is one candidate,
    so whole-word masking must draw exactly what Google's piece-by-piece masking draws."""
    cpd, g_toks = google
    words = [w for d in docs for s in d for w in s.lower().split() if w.isalpha() and tok.tokenize(w) == [w]]
    sents = [" ".join(words[i:i + 12]) + " ." for i in range(0, len(words) - 12, 12)]
    f = write_documents([sents[i:i + 8] for i in range(0, len(sents), 8)], tmp_path / "single_pieces.txt")
    assert not any(t.startswith("##") for d in read_documents([f], tok) for s in d for t in s)
    theirs = cpd.create_training_instances([f], g_toks[True], 64, 2, 0.1, 0.15, 10, random.Random(5))
    ours = create_training_instances(read_documents([f], tok), list(tok.vocab), 64, 2, 0.1, 0.15, 10, random.Random(5),
                                     do_whole_word_mask=True)
    assert len(ours) >= 300 and as_rows(ours) == as_rows(theirs)
    print(f"whole-word masking on single-piece text: {len(ours)} instances identical to Google's")


def test_whole_word_masking_masks_whole_words(tok, docs):
    documents = [[tok.tokenize(s) for s in d] for d in docs[:30]]
    pieces = sum("##" in t for d in documents for s in d for t in s)
    assert pieces > 100  # the text has words of several pieces
    vocab_words = list(tok.vocab)
    insts = create_training_instances(documents, vocab_words, 64, 2, 0.1, 0.15, 10, random.Random(0), do_whole_word_mask=True)
    plain = create_training_instances(documents, vocab_words, 64, 2, 0.1, 0.15, 10, random.Random(0))
    multi = 0
    for inst in insts:
        orig = list(inst.tokens)
        for p, label in zip(inst.masked_lm_positions, inst.masked_lm_labels): orig[p] = label
        pos = set(inst.masked_lm_positions)
        cands = [i for i, t in enumerate(orig) if t not in ("[CLS]", "[SEP]")]  # a ## piece belongs to the candidate before it
        for prev, p in zip(cands, cands[1:]):  # (Google's grouping: even across a [SEP], after truncation from the front)
            if orig[p].startswith("##"):
                assert (prev in pos) == (p in pos)
                multi += p in pos
        budget = min(10, max(1, round(len(orig) * 0.15)))
        assert 1 <= len(pos) <= budget
    assert multi > 50  # words of several pieces were masked
    assert as_rows(insts) != as_rows(plain)


def test_eighty_ten_ten_and_budget(tok):
    toks = ["[CLS]"] + [f"w{i}" for i in range(30)] + ["[SEP]"] + [f"v{i}" for i in range(30)] + ["[SEP]"]
    vocab_words = list(tok.vocab)
    kinds = collections.Counter()
    for seed in range(300):
        out, pos, labels = create_masked_lm_predictions(toks, 0.15, 20, vocab_words, random.Random(seed))
        assert len(pos) == round(len(toks) * 0.15) == 9 and labels == [toks[p] for p in pos] and pos == sorted(pos)
        assert all(toks[p] not in ("[CLS]", "[SEP]") for p in pos)
        assert all(out[i] == t for i, t in enumerate(toks) if i not in pos)
        for p in pos: kinds["mask" if out[p] == "[MASK]" else "keep" if out[p] == toks[p] else "random"] += 1
    n = sum(kinds.values())
    assert abs(kinds["mask"] / n - 0.8) < 0.02 and abs(kinds["keep"] / n - 0.1) < 0.015 and abs(kinds["random"] / n - 0.1) < 0.015
    assert len(create_masked_lm_predictions(toks, 0.15, 4, vocab_words, random.Random(0))[1]) == 4  # max_predictions_per_seq
    assert len(create_masked_lm_predictions(toks[:3], 0.15, 4, vocab_words, random.Random(0))[1]) == 1  # at least one


def test_documents_and_dupe_factor(tok, docs, text_file):
    assert len(docs) > 30 and all(len(d) >= 2 for d in docs) and docs == python_docs_documents(150_000)
    documents = read_documents([text_file], tok)
    assert len(documents) == len(docs) and [len(d) for d in documents] == [len(d) for d in docs]
    one = create_training_instances(documents, list(tok.vocab), 64, 1, 0.1, 0.15, 10, random.Random(3))
    three = create_training_instances(documents, list(tok.vocab), 64, 3, 0.1, 0.15, 10, random.Random(3))
    assert 2.5 < len(three) / len(one) < 3.5
    assert documents == read_documents([text_file], tok)  # the caller's documents are not shuffled in place


# ---- the on-disk format ----
def test_format_round_trips_and_streams(tok, vocab_path, text_file, tmp_path):
    stats = create_pretraining_data(text_file, tmp_path / "a.npy", vocab_path,
                                    max_seq_length=64, max_predictions_per_seq=10, dupe_factor=1, random_seed=4)
    insts = create_training_instances(read_documents([text_file], tok), list(tok.vocab), 64, 1, 0.1, 0.15, 10, random.Random(4))
    ds = PretrainingDataset(tmp_path / "a.npy")
    assert stats["instances"] == len(ds) == len(insts)
    assert isinstance(ds.arrays[0], np.memmap) and ds.arrays[0].dtype == record_dtype(64, 10, 30522)
    assert ds.arrays[0].dtype["input_ids"].base == np.uint16 and record_dtype(64, 10, 70000)["input_ids"].base == np.int32
    header = os.path.getsize(tmp_path / "a.npy") - len(ds) * ds.arrays[0].dtype.itemsize
    assert 0 < header <= 4096  # fixed-size records after a small .npy header
    for k, inst in enumerate(insts):
        ids, types, mask, pos, mids, nsp = ds[k]
        n, m = len(inst.tokens), len(inst.masked_lm_positions)
        assert tok.convert_ids_to_tokens(ids[:n].tolist()) == inst.tokens and not ids[n:].any()
        assert types[:n].tolist() == inst.segment_ids and not types[n:].any() and mask.tolist() == [1] * n + [0] * (64 - n)
        assert pos[:m].tolist() == inst.masked_lm_positions and not pos[m:].any()
        assert tok.convert_ids_to_tokens(mids[:m].tolist()) == inst.masked_lm_labels and mids[m:].tolist() == [-1] * (10 - m)
        assert nsp.item() == inst.is_random_next
    assert ds[-1][0].tolist() == ds[len(ds) - 1][0].tolist()
    with pytest.raises(IndexError): ds[len(ds)]
    # several files are one dataset; a DataLoader reads it in shuffled batches
    both = PretrainingDataset(tmp_path / "a.npy", tmp_path / "a.npy")
    assert len(both) == 2 * len(ds) and torch.equal(both[len(ds) + 7][4], ds[7][4])
    seen = 0
    for batch in torch.utils.data.DataLoader(both, batch_size=32, shuffle=True, num_workers=2):
        assert [tuple(t.shape) for t in batch] == [(len(batch[0]), 64)] * 3 + [(len(batch[0]), 10)] * 2 + [(len(batch[0]),)]
        seen += len(batch[0])
    assert seen == len(both)
    # other shapes do not mix; a file of something else is refused
    write_instances(insts[:5], tok, 80, 10, tmp_path / "b.npy")
    with pytest.raises(ValueError, match="differ in max_seq_length or max_predictions_per_seq: \\(80, 10\\) vs \\(64, 10\\)"):
        PretrainingDataset(tmp_path / "a.npy", tmp_path / "b.npy")
    np.save(tmp_path / "c.npy", np.arange(3))
    with pytest.raises(ValueError, match="not a file of `bert_nb create_pretraining_data`"): PretrainingDataset(tmp_path / "c.npy")
    with pytest.raises(FileNotFoundError, match="no such file"): PretrainingDataset(tmp_path / "none.npy")


# ---- bad input ----
def cpd_cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = create_pretraining_data_main(add_create_pretraining_data_arguments(argparse.ArgumentParser()).parse_args([str(a) for a in argv]))
    return rc, err.getvalue()


def test_bad_input_clear_errors_and_no_output(vocab_path, text_file, tmp_path):
    words = Path(vocab_path).read_text(encoding="utf-8").splitlines()
    out = tmp_path / "out.npy"
    for missing in ("[MASK]", "[CLS]", "[SEP]"):
        (tmp_path / "v.txt").write_text("".join(w + "\n" for w in words if w != missing), encoding="utf-8")
        rc, err = cpd_cli("--input_file", text_file, "--output_file", out, "--vocab_file", tmp_path / "v.txt")
        assert rc == 1 and f"error: the vocabulary lacks {missing} (30521 entries)" in err
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n   \n\t\n\n")
    for f in ("empty.txt", "blank.txt"):
        rc, err = cpd_cli("--input_file", f"{text_file},{tmp_path / f}", "--output_file", out, "--vocab_file", vocab_path)
        assert rc == 1 and f"{f}: the file holds no text" in err
    (tmp_path / "bad.txt").write_bytes(b"good line\nanother\n\xff\xfe bad\n")
    rc, err = cpd_cli("--input_file", tmp_path / "bad.txt", "--output_file", out, "--vocab_file", vocab_path)
    assert rc == 1 and "bad.txt, line 3: not UTF-8 text" in err
    rc, err = cpd_cli("--input_file", tmp_path / "nope*.txt", "--output_file", out, "--vocab_file", vocab_path)
    assert rc == 1 and "nope*.txt: no file matches" in err
    rc, err = cpd_cli("--input_file", text_file, "--output_file", tmp_path / "no" / "dir.npy", "--vocab_file", vocab_path)
    assert rc == 1 and "no such directory" in err
    rc, err = cpd_cli("--input_file", text_file, "--output_file", out, "--vocab_file", vocab_path, "--max_seq_length", "4")
    assert rc == 1 and "max_seq_length=4: at least 5 are needed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "blank.txt", "empty.txt", "v.txt"]  # nothing written, no temp file


def test_long_line_is_cut_and_reported(vocab_path, tmp_path, caplog):
    (tmp_path / "long.txt").write_text("A short first line.\n" + "many words " * 40 + "\nEnd.\n\nOther document.\nAnd more.\n")
    with caplog.at_level(logging.WARNING, logger="bert_nb.pretraining"):
        s = create_pretraining_data(tmp_path / "long.txt", tmp_path / "long.npy", vocab_path, max_seq_length=32, dupe_factor=3)
    assert s["long_lines"] == 1 and "1 line(s) have more word pieces than fit in max_seq_length=32 (the longest: 80)" in caplog.text
    assert s["instances"] > 0 and PretrainingDataset(tmp_path / "long.npy").field("length").max() <= 32


def test_failed_write_keeps_the_old_file(tok, text_file, tmp_path, monkeypatch):
    out = tmp_path / "data.npy"
    create_pretraining_data(text_file, out, minilm_dir() / "vocab.txt", max_seq_length=32, dupe_factor=1)
    before = out.read_bytes()
    def broken(f, arr): f.write(b"\x93NUMPY half"); raise OSError("disk full")
    monkeypatch.setattr(np, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        create_pretraining_data(text_file, out, minilm_dir() / "vocab.txt", max_seq_length=32, dupe_factor=2)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["data.npy", "data.vocab.txt"]


# ---- the model side ----
def tiny_config(**kw):
    return BertConfig(30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, **kw)


@pytest.fixture(scope="module")
def data64(text_file, tmp_path_factory):
    d = tmp_path_factory.mktemp("data64")
    create_pretraining_data(text_file, d / "train.npy", minilm_dir() / "vocab.txt", max_seq_length=64, max_predictions_per_seq=10,
                            dupe_factor=2, random_seed=1)
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
    want = F.cross_entropy(scores.gather(1, pos[..., None].expand(-1, -1, 30522)).flatten(0, 1), mids.flatten(), ignore_index=-1, reduction="none")
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
    return ["--input_file", str(data / "train.npy"), "--bert_config_file", str(data / "tiny.json"), "--output_dir", str(out),
            "--max_seq_length", "64", "--max_predictions_per_seq", "10", "--no_progress", "--no_cuda", *map(str, extra)]


def metrics(out): return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_tiny_model_learns(data64, tmp_path):
    out = tmp_path / "run"
    res = run_pretraining(PARSER.parse_args(rp_flags(data64, out, "--do_train", "--do_eval", "--train_batch_size", 16,
                                                     "--learning_rate", "2e-3", "--num_train_steps", 30, "--num_warmup_steps", 3,
                                                     "--logging_steps", 5, "--eval_steps", 15, "--vocab_file", minilm_dir() / "vocab.txt")))
    losses = [r["loss"] for r in metrics(out) if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] - 1.5, losses
    assert res["global_step"] == 30 and 0 <= res["eval_masked_lm_accuracy"] <= 1 and 0 <= res["eval_next_sentence_accuracy"] <= 1
    assert [r["step"] for r in metrics(out) if "eval_masked_lm_accuracy" in r] == [15, 30]
    written = dict(l.split(" = ") for l in (out / "eval_results.txt").read_text().splitlines())
    assert sorted(written) == ["eval_loss", "eval_masked_lm_accuracy", "eval_masked_lm_loss", "eval_most_common_token_accuracy",
                               "eval_next_sentence_accuracy", "eval_next_sentence_loss", "global_step", "loss"]
    assert {"config.json", "model.safetensors", "vocab.txt", "pretraining.png", "checkpoint-30"} <= {p.name for p in out.iterdir()}
    # evaluation alone, of the saved model, on the same held-out instances (the last 5%): the same numbers
    n = len(PretrainingDataset(data64 / "train.npy")); k = round(n * 0.05)
    np.save(tmp_path / "held.npy", np.load(data64 / "train.npy")[n - k:])
    again = run_pretraining(PARSER.parse_args(["--input_file", str(tmp_path / "held.npy"), "--init_checkpoint", str(out),
                                               "--output_dir", str(tmp_path / "eval"), "--max_seq_length", "64",
                                               "--max_predictions_per_seq", "10", "--do_eval", "--no_progress", "--no_cuda"]))
    assert again["eval_masked_lm_accuracy"] == pytest.approx(res["eval_masked_lm_accuracy"], abs=1e-6)
    assert again["eval_next_sentence_loss"] == pytest.approx(res["eval_next_sentence_loss"], abs=1e-5)


def test_checkpoint_and_resume_equal_one_run(data64, tmp_path):
    from safetensors.torch import load_file
    common = ["--do_train", "--train_batch_size", 8, "--learning_rate", "1e-3", "--num_train_steps", 12, "--save_checkpoints_steps", 6,
              "--logging_steps", 3]
    run_pretraining(PARSER.parse_args(rp_flags(data64, tmp_path / "whole", *common)))
    assert (tmp_path / "whole" / "checkpoint-6").is_dir()
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "whole" / "checkpoint-6", tmp_path / "resumed" / "checkpoint-6")  # as if stopped after step 6
    run_pretraining(PARSER.parse_args(rp_flags(data64, tmp_path / "resumed", *common, "--resume_from", "latest")))
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in metrics(tmp_path / "resumed") if r["step"] > 6] == [r["loss"] for r in metrics(tmp_path / "whole") if r["step"] > 6]


def test_run_pretraining_refuses_bad_input(data64, tmp_path):
    err = io.StringIO()
    def run(*argv):
        with contextlib.redirect_stderr(err): return run_pretraining_main(PARSER.parse_args([str(a) for a in argv]))
    assert run(*rp_flags(data64, tmp_path / "o")) == 1 and "At least one of `do_train` or `do_eval`" in err.getvalue()
    flags = rp_flags(data64, tmp_path / "o", "--do_train")
    assert run(*[f if f != "64" else "128" for f in flags]) == 1
    assert "holds instances of max_seq_length=64, max_predictions_per_seq=10, not 128 and 10" in err.getvalue()
    assert run(*[f for f in flags if f not in ("--bert_config_file", str(data64 / "tiny.json"))]) == 1
    assert "pass --bert_config_file (to pre-train a new model) or --init_checkpoint" in err.getvalue()
    BertConfig(1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).to_json_file(tmp_path / "small.json")
    assert run(*[f if f != str(data64 / "tiny.json") else str(tmp_path / "small.json") for f in flags]) == 1
    assert "but the model's vocab_size is 1000: were the instances made with another vocabulary?" in err.getvalue()
    assert not (tmp_path / "o").exists()


def test_google_flags_parse():
    a = PARSER.parse_args("--input_file a.npy,b.npy --output_dir o --bert_config_file c.json --init_checkpoint m --max_seq_length 128 "
                          "--max_predictions_per_seq 20 --train_batch_size 32 --learning_rate 1e-4 --num_train_steps 20 "
                          "--num_warmup_steps 10 --save_checkpoints_steps 5 --do_train --do_eval --eval_batch_size 8".split())
    assert (a.num_train_steps, a.num_warmup_steps, a.save_checkpoints_steps, a.learning_rate, a.max_predictions_per_seq) == (20, 10, 5, 1e-4, 20)
    c = add_create_pretraining_data_arguments(argparse.ArgumentParser()).parse_args(
        "--input_file i --output_file o --vocab_file v --do_lower_case --max_seq_length 64 --max_predictions_per_seq 9 "
        "--masked_lm_prob 0.2 --random_seed 3 --dupe_factor 4 --short_seq_prob 0.3 --do_whole_word_mask".split())
    assert (c.max_seq_length, c.max_predictions_per_seq, c.masked_lm_prob, c.random_seed, c.dupe_factor, c.short_seq_prob) == (64, 9, 0.2, 3, 4, 0.3)
    assert c.do_lower_case and c.do_whole_word_mask
    d = add_create_pretraining_data_arguments(argparse.ArgumentParser()).parse_args("--input_file i --output_file o --vocab_file v --no-do_lower_case".split())
    assert not d.do_lower_case and not d.do_whole_word_mask and (d.max_seq_length, d.dupe_factor, d.random_seed) == (128, 10, 12345)


# ---- torchrun ----
def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_torchrun_two_processes_match_one(text_file, tmp_path):
    "`torchrun --nproc_per_node 2` (gloo, CPU) with batch 4 per process = one process with batch 8: the same weights."
    from safetensors.torch import load_file
    # every instance holds exactly 3 predictions, so each process's mean loss weighs the instances as one process's does
    create_pretraining_data(text_file, tmp_path / "train.npy", minilm_dir() / "vocab.txt", max_seq_length=32, max_predictions_per_seq=3,
                            masked_lm_prob=0.9, dupe_factor=1, random_seed=2)
    assert (PretrainingDataset(tmp_path / "train.npy").field("num_masked") == 3).all()
    BertConfig(30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).to_json_file(tmp_path / "tiny.json")
    script = tmp_path / "run.py"
    script.write_text("import argparse, sys\nfrom bert_nb.pretraining import add_run_pretraining_arguments, run_pretraining_main\n"
                      "sys.exit(run_pretraining_main(add_run_pretraining_arguments(argparse.ArgumentParser()).parse_args()))\n")
    common = ["--input_file", str(tmp_path / "train.npy"), "--bert_config_file", str(tmp_path / "tiny.json"), "--max_seq_length", "32",
              "--max_predictions_per_seq", "3", "--learning_rate", "1e-3", "--num_train_steps", "5", "--logging_steps", "1",
              "--do_train", "--no_progress", "--no_cuda", "--no_plot"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), str(script),
           *common, "--output_dir", str(tmp_path / "ddp"), "--train_batch_size", "4"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = run_pretraining(PARSER.parse_args(common + ["--output_dir", str(tmp_path / "one"), "--train_batch_size", "8"]))
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
                                             "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.dense.bias",
                                             "cls.predictions.transform.dense.weight", "cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    assert rep.missing == rep.newly_initialized and not rep.unexpected  # the encoder, pooler and the tied decoder all load
    assert "cls.predictions.decoder.weight" in rep.loaded
    assert "task heads newly initialized: train them (7)" in str(rep)
    out = tmp_path / "minilm"
    res = run_pretraining(PARSER.parse_args(["--input_file", str(data64 / "train.npy"), "--init_checkpoint", str(minilm_dir()),
                                             "--output_dir", str(out), "--max_seq_length", "64", "--max_predictions_per_seq", "10",
                                             "--train_batch_size", "4", "--eval_batch_size", "16", "--learning_rate", "1e-4",
                                             "--num_train_steps", "3", "--holdout_fraction", "0.01", "--do_train", "--do_eval",
                                             "--no_progress", "--no_cuda", "--no_plot"]))
    assert res["global_step"] == 3 and res["eval_masked_lm_accuracy"] >= 0
    again = BertForPreTraining.from_pretrained(out)
    assert not again.loading_report.missing and again.config.hidden_size == 384 and again.config.num_hidden_layers == 6


# ---- a vocabulary of the corpus's own ----
def test_train_vocab_is_a_bert_vocab(text_file, tmp_path):
    """train_wordpiece_vocab writes a vocab.txt that BertTokenizer and tokenizers' own BERT tokenizer read and cut alike; the command
    writes the same file; bad input is named and leaves no file."""
    from tokenizers import BertWordPieceTokenizer
    from bert_nb.pretraining import SPECIAL_PIECES, add_train_vocab_arguments, train_vocab_main, train_wordpiece_vocab
    n = train_wordpiece_vocab(text_file, tmp_path / "v" / "vocab.txt", vocab_size=1500)
    lines = [l for l in Path(text_file).read_text().splitlines() if l]
    ours, rust = BertTokenizer(tmp_path / "v" / "vocab.txt"), BertWordPieceTokenizer(str(tmp_path / "v" / "vocab.txt"), lowercase=True)
    assert len(ours.vocab) == n and 1000 < n <= 1500 and list(ours.vocab)[:5] == SPECIAL_PIECES
    assert all(ours.tokenize(l) == rust.encode(l, add_special_tokens=False).tokens for l in lines)
    assert sum(map(len, map(ours.tokenize, lines))) < 1.3 * sum(map(len, map(BertTokenizer(minilm_dir() / "vocab.txt").tokenize, lines)))
    cased = train_wordpiece_vocab(text_file, tmp_path / "cased.txt", vocab_size=1500, do_lower_case=False)
    assert cased > 0 and any(t[:1].isupper() for t in (tmp_path / "cased.txt").read_text().split())
    p = add_train_vocab_arguments(argparse.ArgumentParser())
    assert train_vocab_main(p.parse_args(["--input_file", str(text_file), "--vocab_file", str(tmp_path / "cli.txt"), "--vocab_size", "1500"])) == 0
    assert (tmp_path / "cli.txt").read_bytes() == (tmp_path / "v" / "vocab.txt").read_bytes()
    (tmp_path / "blank.txt").write_text("\n \n"); (tmp_path / "bad.txt").write_bytes(b"ok\nnot \xff utf-8\n")
    for src, size, msg in (("blank.txt", 100, "no text to learn a vocabulary from"), ("bad.txt", 100, "bad.txt, line 2: not UTF-8"),
                           ("missing.txt", 100, "missing.txt: no such file"), ("blank.txt", 3, "vocab_size=3")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert train_vocab_main(p.parse_args(["--input_file", str(tmp_path / src), "--vocab_file", str(tmp_path / "out.txt"),
                                                  "--vocab_size", str(size)])) == 1
        assert msg in err.getvalue(), (msg, err.getvalue())
    assert not (tmp_path / "out.txt").exists()


# ---- the real thing (minutes) ----
@SLOW
def test_real_pretraining_fills_in_masked_words(tmp_path, request):
    """A small BERT pre-trained on this CPU for minutes on ~1.5 MB of Python's documentation, with a vocabulary learned from it:
    held-out MLM accuracy well above always predicting the most common piece, also where the input shows [MASK], and it fills in
    a masked word of a question."""
    from bert_nb.pretraining import masked_lm_accuracy_by_input, train_wordpiece_vocab
    torch.set_num_threads(2); request.addfinalizer(lambda: torch.set_num_threads(1))  # the real run takes both cores
    docs = python_docs_documents(2_500_000)
    held, train = docs[::20], [d for i, d in enumerate(docs) if i % 20]  # held-out documents: text never trained on
    write_documents(train, tmp_path / "train.txt"); write_documents(held, tmp_path / "heldout.txt")
    n = train_wordpiece_vocab(tmp_path / "train.txt", tmp_path / "vocab.txt", vocab_size=8000)
    for name, dupe in (("train", 5), ("heldout", 1)):
        create_pretraining_data(tmp_path / f"{name}.txt", tmp_path / f"{name}.npy", tmp_path / "vocab.txt", max_seq_length=32,
                                max_predictions_per_seq=5, dupe_factor=dupe, random_seed=1 + (name == "heldout"))
    BertConfig(n, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
               max_position_embeddings=128).to_json_file(tmp_path / "small.json")
    t = time.time()
    res = run_pretraining(PARSER.parse_args(["--input_file", str(tmp_path / "train.npy"), "--eval_file", str(tmp_path / "heldout.npy"),
                                             "--bert_config_file", str(tmp_path / "small.json"), "--vocab_file", str(tmp_path / "vocab.txt"),
                                             "--output_dir", str(tmp_path / "run"), "--max_seq_length", "32", "--max_predictions_per_seq", "5",
                                             "--train_batch_size", "64", "--eval_batch_size", "128", "--learning_rate", "2e-3",
                                             "--optimizer", "adamw", "--num_train_steps", "3000", "--eval_steps", "1000", "--logging_steps", "50",
                                             "--do_train", "--do_eval", "--no_progress", "--no_cuda"]))
    minutes = (time.time() - t) / 60
    acc, base, nsp = res["eval_masked_lm_accuracy"], res["eval_most_common_token_accuracy"], res["eval_next_sentence_accuracy"]
    print(f"held-out MLM accuracy {acc:.3f} vs most-common-token {base:.3f}; NSP accuracy {nsp:.3f}; {minutes:.1f} min")
    assert acc > 4 * base and acc > base + 0.15
    held_nsp = PretrainingDataset(tmp_path / "heldout.npy").field("next_sentence_label")
    assert nsp > max(held_nsp.mean(), 1 - held_nsp.mean())  # better than always the commoner kind of pair (only just: 64.0% vs 62.0%)
    model, tok = BertForPreTraining.from_pretrained(tmp_path / "run").eval(), BertTokenizer(tmp_path / "run" / "vocab.txt")
    by_kind = masked_lm_accuracy_by_input(model, PretrainingDataset(tmp_path / "heldout.npy"), tok.vocab["[MASK]"])
    print("accuracy by what the input showed:", by_kind)
    assert by_kind["[MASK]"][1] > 3 * base  # filled from the context, not copied from the input
    answers = {q: predict_masked(model, tok, q)[0] for q in ("If the argument is omitted, [MASK] is returned.", "Return a new [MASK] of the items.")}
    print(answers)
    assert answers["If the argument is omitted, [MASK] is returned."][0][0] == "none"
    assert answers["Return a new [MASK] of the items."][0][0] in {"list", "sequence", "tuple", "set", "dict", "dictionary", "copy", "view", "iterator"}


# ---- LAMB ----
def test_lamb_step_by_hand():
    from bert_nb.pretraining import Lamb
    w = torch.nn.Parameter(torch.tensor([[1., -2.], [2., 4.]])); opt = Lamb([w], lr=0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.2)
    m = v = torch.zeros(2, 2); x = w.detach().clone()
    for t, g in enumerate([torch.tensor([[0.5, 1.], [-1., 2.]]), torch.tensor([[1., 0.], [3., -1.]])], 1):
        w.grad = g.clone(); opt.step()
        m, v = 0.8 * m + 0.2 * g, 0.9 * v + 0.1 * g * g
        u = (m / (1 - 0.8 ** t)) / ((v / (1 - 0.9 ** t)).sqrt() + 1e-6) + 0.2 * x
        x = x - 0.05 * x.norm() / u.norm() * u
        torch.testing.assert_close(w.detach(), x)
    assert opt.state_dict()["state"][0]["step"] == 2


def test_lamb_trains_and_resumes_through_the_trainer(data64, tmp_path):
    from safetensors.torch import load_file
    common = ["--do_train", "--optimizer", "lamb", "--train_batch_size", 8, "--learning_rate", "0.1", "--num_train_steps", 12,
              "--save_checkpoints_steps", 6, "--logging_steps", 3]
    run_pretraining(PARSER.parse_args(rp_flags(data64, tmp_path / "whole", *common)))
    losses = [r["loss"] for r in metrics(tmp_path / "whole") if "loss" in r]
    assert losses[-1] < losses[0] - 0.4, losses  # each step moves a tensor by about lr of its own norm: slow on a new model
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "whole" / "checkpoint-6", tmp_path / "resumed" / "checkpoint-6")
    run_pretraining(PARSER.parse_args(rp_flags(data64, tmp_path / "resumed", *common, "--resume_from", "latest")))
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
