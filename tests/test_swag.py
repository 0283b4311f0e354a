"""`bert_nb run_swag`: the SWAG reader (and its errors, with file and line), the seed's features, accuracy, and the
command end to end on the bundled sample with a tiny model."""
import argparse, contextlib, csv, io, json, shutil

import pytest
import torch

from bert_nb.heads import save_tiny_bert
from bert_nb.cli import main
from bert_nb.config import BertConfig
from bert_nb.heads import BertForMultipleChoice
from bert_nb.hub import minilm_dir
from bert_nb.swag import (SWAG_SAMPLE_DIR, SwagExample, add_swag_arguments, multiple_choice_metrics, read_swag_examples,
                          swag_features)
from bert_nb.tokenization import BertTokenizer

HEADER = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
ROW = '0,v0,7,"A man sits, then. He","A man sits, then.",He,gold,stands.,flies.,melts.,sings.,2\n'


@pytest.fixture(scope="module")
def tok(): return BertTokenizer(minilm_dir() / "vocab.txt")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny"), minilm_dir() / "vocab.txt")


def test_sample_is_in_swag_layout():
    for name, n in (("train.csv", 40), ("val.csv", 20)):
        rows = list(csv.reader(open(SWAG_SAMPLE_DIR / name, newline="", encoding="utf-8")))
        assert ",".join(rows[0]) + "\n" == HEADER and len(rows) == n + 1
        assert all(r[3] == f"{r[4]} {r[5]}" for r in rows[1:])  # startphrase = sent1 + ' ' + sent2
        assert sorted(int(r[-1]) for r in rows[1:]) == sorted(list(range(4)) * (n // 4))  # every label equally often
    assert (SWAG_SAMPLE_DIR / "README.md").read_text().count("written for this project") == 1


def test_reader_takes_columns_by_name(tmp_path):
    (tmp_path / "a.csv").write_text(HEADER + ROW)
    (tmp_path / "b.csv").write_text(HEADER.lstrip(",") + ROW.split(",", 1)[1])  # without the unnamed index column
    for f in ("a.csv", "b.csv"):
        (e,) = read_swag_examples(tmp_path / f)
        assert e == SwagExample("7", "A man sits, then.", "He", "stands.", "flies.", "melts.", "sings.", label=2)
    (tmp_path / "test.csv").write_text(HEADER.replace(",label", "") + ROW[:-3] + "\n")
    assert read_swag_examples(tmp_path / "test.csv", is_training=False)[0].label is None


@pytest.mark.parametrize("text, message", [
    (HEADER + ROW + '1,v1,8,x,x,He,gold,a,b,c,1\n', "bad.csv, line 3: 11 fields, but the header has 12"),
    (HEADER + ROW + ROW.replace(",2\n", ",x\n"), "bad.csv, line 3: label 'x' is not one of 0, 1, 2, 3"),
    (HEADER + ROW + '1,v1,8,"unclosed,x,He,gold,a,b,c,d,1\n', "bad.csv, line"),
    (HEADER.replace(",ending3", ",ending_3"), "bad.csv, line 1: the header lacks the column(s) ending3"),
    ("", "bad.csv, line 1: the file is empty"),
    (HEADER, "no questions follow"),
])
def test_bad_files_name_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_swag_examples(tmp_path / "bad.csv")


def test_missing_file_and_label_column(tmp_path):
    "A missing file is named; a test file read for training lacks `label`; a label must be 0-3."
    with pytest.raises(FileNotFoundError, match="nope.csv: no such file"): read_swag_examples(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text(HEADER.replace(",label", "") + ROW[:-3] + "\n")
    with pytest.raises(ValueError, match=r"line 1: the header lacks the column\(s\) label"):
        read_swag_examples(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text(HEADER + ROW.replace(",2\n", ",4\n"))
    with pytest.raises(ValueError, match="line 2: label '4' is not one of 0, 1, 2, 3"):
        read_swag_examples(tmp_path / "bad.csv")


def test_non_utf8_names_the_line(tmp_path):
    (tmp_path / "bad.csv").write_bytes((HEADER + ROW + ROW.replace("flies", "flies to the café")).encode("latin-1"))
    with pytest.raises(ValueError, match="bad.csv, line 3: not UTF-8"): read_swag_examples(tmp_path / "bad.csv")


def seed_convert(example, tokenizer, max_seq_length):
    "The seed's convert_examples_to_features for one example: (input_ids, input_mask, segment_ids) per ending."
    context, start, out = tokenizer.tokenize(example.context_sentence), tokenizer.tokenize(example.start_ending), []
    for ending in example.endings:
        a, b = context[:], start + tokenizer.tokenize(ending)
        while len(a) + len(b) > max_seq_length - 3: (a if len(a) > len(b) else b).pop()
        tokens = ["[CLS]"] + a + ["[SEP]"] + b + ["[SEP]"]
        ids, pad = tokenizer.convert_tokens_to_ids(tokens), [0] * (max_seq_length - len(tokens))
        out.append((ids + pad, [1] * len(ids) + pad, [0] * (len(a) + 2) + [1] * (len(b) + 1) + pad))
    return out


@pytest.mark.parametrize("max_seq_length", [9, 16, 64])
def test_features_are_the_seeds(tok, max_seq_length):
    exs = read_swag_examples(SWAG_SAMPLE_DIR / "train.csv") + read_swag_examples(SWAG_SAMPLE_DIR / "val.csv")
    f = swag_features(exs, tok, max_seq_length)
    assert f["input_ids"].shape == (60, 4, max_seq_length) and f["labels"].tolist() == [e.label for e in exs]
    for i, e in enumerate(exs):
        ids, mask, seg = map(list, zip(*seed_convert(e, tok, max_seq_length)))
        ours = f["input_ids"][i].tolist(), f["attention_mask"][i].tolist(), f["token_type_ids"][i].tolist()
        assert ours == (ids, mask, seg)


def test_features_feed_the_model(tok):
    exs = read_swag_examples(SWAG_SAMPLE_DIR / "val.csv")[:3]
    f = swag_features(exs, tok, 24)
    torch.manual_seed(0)
    cfg = BertConfig(30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = BertForMultipleChoice(cfg, num_choices=4).eval()
    logits = model(f["input_ids"], f["token_type_ids"], f["attention_mask"])
    assert logits.shape == (3, 4)
    m = multiple_choice_metrics(f["labels"])(logits, None)
    assert m["accuracy"] == (logits.argmax(-1) == f["labels"]).sum().item() / 3
    assert abs(m["loss"] - model(f["input_ids"], f["token_type_ids"], f["attention_mask"], f["labels"]).item()) < 1e-6


def test_metrics_by_hand():
    logits = torch.tensor([[3., 0, 0, 0], [0, 0, 0, 1], [0, 5, 0, 0], [1, 1, 2, 1]])
    m = multiple_choice_metrics(torch.tensor([0, 3, 2, 2]))(logits, None)
    assert m["accuracy"] == 0.75
    assert abs(m["loss"] - torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3, 2, 2])).item()) < 1e-7


def test_seed_flags_parse():
    p = add_swag_arguments(argparse.ArgumentParser())
    a = p.parse_args("--data_dir d --bert_model m --output_dir o --max_seq_length 80 --do_train --do_eval "
                     "--do_lower_case --train_batch_size 16 --eval_batch_size 4 --learning_rate 2e-5 "
                     "--num_train_epochs 3.0 --warmup_proportion 0.1 "
                     "--no_cuda --local_rank -1 --seed 7 --gradient_accumulation_steps 4 --fp16 --loss_scale 128 "
                     "--bf16 --overwrite_output_dir --max_steps 10".split())
    assert (a.max_seq_length, a.train_batch_size, a.gradient_accumulation_steps, a.loss_scale, a.max_steps) == \
        (80, 16, 4, 128., 10)
    assert a.do_train and a.do_eval and a.do_lower_case and a.fp16 and a.bf16 and a.overwrite_output_dir
    assert not p.parse_args("--data_dir d --bert_model m --output_dir o --no-do_lower_case".split()).do_lower_case


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def test_run_swag_end_to_end(tiny_dir, tmp_path):
    """A tiny model learns the 40 training questions (the loss falls), is saved, evaluated, and evaluates the same
    reloaded."""
    out = tmp_path / "out"
    rc, stdout, err = run_cli("run_swag", "--data_dir", SWAG_SAMPLE_DIR, "--bert_model", tiny_dir, "--output_dir", out,
                              "--do_train", "--do_eval", "--max_seq_length", 40, "--train_batch_size", 8,
                              "--learning_rate", "5e-4", "--num_train_epochs", 12, "--logging_steps", 5,
                              "--no_progress", "--no_plot", "--no_cuda")
    assert rc == 0, err
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0], losses
    res = dict(l.split(" = ") for l in (out / "eval_results.txt").read_text().splitlines())
    assert sorted(res) == ["eval_accuracy", "eval_loss", "global_step", "loss"] and res["global_step"] == "60"
    assert float(res["eval_accuracy"]) * 20 == round(float(res["eval_accuracy"]) * 20)  # a share of the 20 questions
    assert "eval_accuracy = " in stdout
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in out.iterdir()}
    rc, stdout, err = run_cli("run_swag", "--data_dir", SWAG_SAMPLE_DIR, "--bert_model", out,
                              "--output_dir", tmp_path / "eval", "--do_eval", "--max_seq_length", 40, "--no_progress",
                              "--no_cuda")
    assert rc == 0, err
    again = dict(l.split(" = ") for l in (tmp_path / "eval" / "eval_results.txt").read_text().splitlines())
    assert again["eval_accuracy"] == res["eval_accuracy"]
    assert abs(float(again["eval_loss"]) - float(res["eval_loss"])) < 1e-5


def test_bad_input_stops_before_writing(tiny_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SWAG_SAMPLE_DIR / "train.csv", data)
    (data / "val.csv").write_text(HEADER + ROW + ROW.replace(",2\n", ",7\n"))
    rc, _, err = run_cli("run_swag", "--data_dir", data, "--bert_model", tiny_dir, "--output_dir", tmp_path / "out",
                         "--do_train", "--do_eval", "--no_cuda")
    assert rc == 1 and "val.csv, line 3: label '7'" in err
    assert not (tmp_path / "out").exists()
    rc, _, err = run_cli("run_swag", "--data_dir", tmp_path / "nowhere", "--bert_model", tiny_dir,
                         "--output_dir", tmp_path / "out", "--do_eval", "--no_cuda")
    assert rc == 1 and "val.csv: no such file" in err
    rc, _, err = run_cli("run_swag", "--data_dir", data, "--bert_model", tiny_dir, "--output_dir", tmp_path / "out")
    assert rc == 1 and "At least one of `do_train` or `do_eval`" in err
    # --max_seq_length 128, the tiny model has 64 positions
    rc, _, err = run_cli("run_swag", "--data_dir", SWAG_SAMPLE_DIR, "--bert_model", tiny_dir,
                         "--output_dir", tmp_path / "out", "--do_train", "--no_cuda")
    assert rc == 1 and "--max_seq_length 128 is longer than the model's max_position_embeddings=64" in err
    assert not (tmp_path / "out").exists()
