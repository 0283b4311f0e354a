"""GLUE fine-tuning: every task's official layout through processor, features, a tiny BERT trained a few steps and
evaluation; features as the seed's loop; metrics against scikit-learn/SciPy; the saved model reloads to the same
predictions; torchrun (2 CPU processes) = one process; bad input says where; the demo data and a quick demo."""
import argparse, contextlib, io, json, os, socket, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bert_nb.heads import save_tiny_bert
from bert_nb import BasicTokenizer, BertTokenizer, BertForSequenceClassification
from bert_nb.hub import display_path
from bert_nb.demo import DEMO_DATA_DIR, add_demo_arguments, demo
from bert_nb.glue import (InputExample, InputFeatures, _truncate_seq_pair, add_run_classifier_arguments,
                          compute_metrics, convert_examples_to_features, f1_score, get_processor, matthews_corrcoef,
                          output_modes, pearsonr, predict, processors, read_tsv, run_classifier, simple_accuracy,
                          spearmanr)

ROOT = Path(__file__).resolve().parents[1]
BERT_NB = Path(sys.executable).parent / "bert_nb"

# ---- a few lines of each official file: the real headers and columns, our rows ----
def tsv(*rows): return "".join("\t".join(map(str, r)) + "\n" for r in rows)

PAIRS = [("a man is playing a guitar", "someone plays the guitar", 1),
         ("the cat is on the roof", "stocks fell on monday", 0),
         ("she reads a book", "a woman is reading a book", 1), ("the bus is late", "he cooked dinner for two", 0),
         ("they won the final", "the team won the final", 1), ("rain is expected today", "the dog chased a ball", 0),
         ("the shop opens at nine", "the store opens at nine", 1), ("he sold his car", "the moon is full tonight", 0)]
NLI = ["neutral", "entailment", "contradiction"]
MNLI_COLS = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
             "sentence2_parse sentence1 sentence2").split()
STSB_COLS = "index genre filename year old_index source1 source2 sentence1 sentence2".split()
def mnli(i, a, b, *lab):
    return [i, 31193 + i, f"{31193 + i}n", "government", f"( ( {a} ) )", f"( {b} )", f"(ROOT (S {a}))",
            f"(ROOT (S {b}))", a, b, *lab]
def stsb(i, a, b, *score): return [i, "main-news", "headlines", "2015", f"{i:04d}", "none", "none", a, b, *score]
def nli3(task, c1, c2, labels):
    head = ("index", c1, c2, "label")
    return {"train.tsv": tsv(head, *[(i, a, b, labels[1 - y]) for i, (a, b, y) in enumerate(PAIRS)]),
            "dev.tsv": tsv(head, *[(i, b, a, labels[1 - y]) for i, (a, b, y) in enumerate(PAIRS[:4])]),
            "test.tsv": tsv(("index", c1, c2), *[(i, a, b) for i, (a, b, _) in enumerate(PAIRS[:3])])}
MRPC_H = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
QQP_H = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
MNLI_DEV_H = MNLI_COLS + [f"label{k}" for k in range(1, 6)] + ["gold_label"]
FIXTURES = {
    "cola": {"train.tsv": tsv(*[("clc95", y, "" if y else "*", a) for a, _, y in PAIRS]),
             "dev.tsv": tsv(*[("clc95", y, "", b) for _, b, y in PAIRS[:4]]),
             "test.tsv": tsv(("index", "sentence"), *[(i, a) for i, (a, _, _) in enumerate(PAIRS[:3])])},
    "sst-2": {"train.tsv": tsv(("sentence", "label"), *[(a, y) for a, _, y in PAIRS]),
              "dev.tsv": tsv(("sentence", "label"), *[(b, y) for _, b, y in PAIRS[:4]]),
              "test.tsv": tsv(("index", "sentence"), *[(i, a) for i, (a, _, _) in enumerate(PAIRS[:3])])},
    "mrpc": {"train.tsv": tsv(MRPC_H, *[(y, 1000 + i, 2000 + i, a, b) for i, (a, b, y) in enumerate(PAIRS)]),
             "dev.tsv": tsv(MRPC_H, *[(y, 3000 + i, 4000 + i, b, a) for i, (a, b, y) in enumerate(PAIRS[:4])]),
             "test.tsv": tsv(("index",) + MRPC_H[1:],
                             *[(i, 5000 + i, 6000 + i, a, b) for i, (a, b, _) in enumerate(PAIRS[:3])])},
    "sts-b": {"train.tsv": tsv(STSB_COLS + ["score"],
                               *[stsb(i, a, b, f"{4.5 * y + 0.1 * i:.3f}") for i, (a, b, y) in enumerate(PAIRS)]),
              "dev.tsv": tsv(STSB_COLS + ["score"],
                             *[stsb(i, b, a, f"{3.8 * y + 0.6:.3f}") for i, (a, b, y) in enumerate(PAIRS[:4])]),
              "test.tsv": tsv(STSB_COLS, *[stsb(i, a, b) for i, (a, b, _) in enumerate(PAIRS[:3])])},
    "qqp": {"train.tsv": tsv(QQP_H,
                             *[(i, 2 * i + 1, 2 * i + 2, a + "?", b + "?", y) for i, (a, b, y) in enumerate(PAIRS)]),
            "dev.tsv": tsv(QQP_H,
                           *[(i, 2 * i + 1, 2 * i + 2, b + "?", a + "?", y) for i, (a, b, y) in enumerate(PAIRS[:4])]),
            "test.tsv": tsv(("id", "question1", "question2"),
                            *[(i, a + "?", b + "?") for i, (a, b, _) in enumerate(PAIRS[:3])])},
    "mnli": {"train.tsv": tsv(MNLI_COLS + ["label1", "gold_label"],
                              *[mnli(i, a, b, NLI[i % 3], NLI[i % 3]) for i, (a, b, _) in enumerate(PAIRS)]),
             "dev_matched.tsv": tsv(MNLI_DEV_H,
                                    *[mnli(i, a, b, *[NLI[i % 3]] * 6) for i, (a, b, _) in enumerate(PAIRS[:3])]),
             "dev_mismatched.tsv": tsv(MNLI_DEV_H, *[mnli(i, b, a, *[NLI[(i + 2) % 3]] * 6)
                                                    for i, (a, b, _) in enumerate(PAIRS[:4])]),
             "test_matched.tsv": tsv(MNLI_COLS, *[mnli(i, a, b) for i, (a, b, _) in enumerate(PAIRS[:2])]),
             "test_mismatched.tsv": tsv(MNLI_COLS, *[mnli(i, b, a) for i, (a, b, _) in enumerate(PAIRS[:3])])},
    "qnli": nli3("qnli", "question", "sentence", ["entailment", "not_entailment"]),
    "rte": nli3("rte", "sentence1", "sentence2", ["entailment", "not_entailment"]),
    "wnli": nli3("wnli", "sentence1", "sentence2", ["1", "0"]),
}
FIXTURES["mnli-mm"] = FIXTURES["mnli"]
TASKS = list(processors)


def write_task(root, task, **override):
    d = Path(root) / task
    d.mkdir(parents=True, exist_ok=True)
    for name, text in {**FIXTURES[task], **override}.items(): (d / name).write_text(text)
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A random tiny BERT saved as a pretrained folder (config.json, model.safetensors, vocab.txt), the fixtures' words."
    d = tmp_path_factory.mktemp("tiny")
    words = sorted({w for rows in FIXTURES.values() for t in rows.values() for w in BasicTokenizer().tokenize(t)})
    (d / "vocab.txt").write_text("".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words))
    return save_tiny_bert(d, d / "vocab.txt", intermediate_size=37, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)


PARSER = add_run_classifier_arguments(argparse.ArgumentParser())
def flags(task, data, model, out, *more):
    return ["--task_name", task, "--data_dir", str(data), "--bert_model", str(model), "--output_dir", str(out),
            "--do_lower_case", "--max_seq_length", "24", "--train_batch_size", "4", "--learning_rate", "3e-3",
            "--num_train_epochs", "10", "--warmup_proportion", "0.1", "--logging_steps", "5", "--no_progress",
            "--no_plot", *more]
def losses(out):
    return [r["loss"] for r in map(json.loads, (Path(out) / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


# ---- processors ----
EXPECTED = {  # (train, dev, test) counts and (guid, text_a, text_b, label) of the second training example
    "cola": ((8, 4, 3), ("train-1", PAIRS[1][0], None, "0")),
    "sst-2": ((8, 4, 3), ("train-2", PAIRS[1][0], None, "0")),
    "mrpc": ((8, 4, 3), ("train-2", PAIRS[1][0], PAIRS[1][1], "0")),
    "sts-b": ((8, 4, 3), ("train-1", PAIRS[1][0], PAIRS[1][1], "0.100")),
    "qqp": ((8, 4, 3), ("train-1", PAIRS[1][0] + "?", PAIRS[1][1] + "?", "0")),
    "mnli": ((8, 3, 2), ("train-1", PAIRS[1][0], PAIRS[1][1], "entailment")),
    "mnli-mm": ((8, 4, 3), ("train-1", PAIRS[1][0], PAIRS[1][1], "entailment")),
    "qnli": ((8, 4, 3), ("train-1", PAIRS[1][0], PAIRS[1][1], "not_entailment")),
    "rte": ((8, 4, 3), ("train-1", PAIRS[1][0], PAIRS[1][1], "not_entailment")),
    "wnli": ((8, 4, 3), ("train-1", PAIRS[1][0], PAIRS[1][1], "0")),
}


@pytest.mark.parametrize("task", TASKS)
def test_processor_reads_the_official_layout(tmp_path, task):
    p, d = get_processor(task.upper()), write_task(tmp_path, task)
    splits = p.get_train_examples(d), p.get_dev_examples(d), p.get_test_examples(d)
    counts, second = EXPECTED[task]
    assert tuple(map(len, splits)) == counts
    e = splits[0][1]
    assert (e.guid, e.text_a, e.text_b, e.label) == second
    assert all(x.label is None for x in splits[2]) and splits[2][1].guid == "test-1"
    assert all(x.label is not None for x in splits[0] + splits[1])
    labels = p.get_labels()
    nli3_labels, nli2_labels = ["contradiction", "entailment", "neutral"], ["entailment", "not_entailment"]
    assert labels == {"mnli": nli3_labels, "mnli-mm": nli3_labels, "sts-b": [None], "qnli": nli2_labels,
                      "rte": nli2_labels}.get(task, ["0", "1"])
    assert output_modes[task] == ("regression" if task == "sts-b" else "classification")


def test_mnli_dev_sets_are_matched_and_mismatched(tmp_path):
    d = write_task(tmp_path, "mnli")
    assert [e.label for e in get_processor("mnli").get_dev_examples(d)] == ["neutral", "entailment", "contradiction"]
    assert [e.label for e in get_processor("mnli-mm").get_dev_examples(d)] == \
        ["contradiction", "neutral", "entailment", "contradiction"]
    assert get_processor("mnli-mm").get_dev_examples(d)[0].text_a == PAIRS[0][1]



@pytest.mark.parametrize("task", TASKS)
def test_every_split_holds_the_task_labels_and_texts(tmp_path, task):
    "Every label read is one of the task's (or a score); a pair task's second text sits where the table says."
    p, d = get_processor(task), write_task(tmp_path, task)
    tr, dev, te = p.get_train_examples(d), p.get_dev_examples(d), p.get_test_examples(d)
    assert len(tr) == len(PAIRS)
    assert len(te) == (2 if task == "mnli" else 3)  # these fixtures: 2 matched, 3 mismatched test pairs
    assert te[0].label is None
    assert all(e.label in p.get_labels() or p.get_labels() == [None] for e in tr + dev), task
    paired = task not in ("cola", "sst-2")
    assert tr[0].text_a.rstrip("?") == PAIRS[0][0]
    assert (tr[0].text_b is not None) == paired
    if paired: assert tr[1].text_b.rstrip("?") == PAIRS[1][1]


def test_labels_scores_and_test_columns(tmp_path):
    "MNLI's matched and mismatched dev labels, STS-B's score column, QQP's test columns."
    assert get_processor("mnli").get_dev_examples(write_task(tmp_path, "mnli"))[1].label == "entailment"
    assert get_processor("mnli-mm").get_dev_examples(write_task(tmp_path, "mnli"))[1].label == "neutral"
    assert get_processor("sts-b").get_train_examples(write_task(tmp_path, "sts-b"))[1].label == "0.100"
    assert get_processor("qqp").get_test_examples(write_task(tmp_path, "qqp"))[2] == \
        InputExample("test-2", PAIRS[2][0] + "?", PAIRS[2][1] + "?", None)


def test_score_that_is_not_a_number_and_missing_data_dir(tmp_path):
    bad = write_task(tmp_path / "bad", "sts-b",
                     **{"train.tsv": FIXTURES["sts-b"]["train.tsv"].replace("4.500", "high")})
    with pytest.raises(ValueError, match="label 'high' is not a number"):
        get_processor("sts-b").get_train_examples(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_processor("mrpc").get_train_examples(tmp_path / "nowhere")

# ---- every task end to end on the tiny BERT ----
@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_evaluates_and_predicts(tmp_path, tiny, task):
    out = tmp_path / "out"
    args = flags(task, write_task(tmp_path, task), tiny, out, "--do_train", "--do_eval", "--do_predict")
    res = run_classifier(PARSER.parse_args(args))
    l = losses(out)
    assert res["train"]["step"] == 20 and len(l) == 4 and l[-1] < l[0], l
    metric_keys = {"cola": ["mcc"], "mrpc": ["acc", "acc_and_f1", "f1"], "qqp": ["acc", "acc_and_f1", "f1"],
                   "sts-b": ["corr", "pearson", "spearmanr"]}.get(task, ["acc"])
    lines = (out / "eval_results.txt").read_text().splitlines()
    assert [x.split(" = ")[0] for x in lines] == sorted(metric_keys + ["eval_loss", "global_step", "loss"])
    assert "global_step = 20" in lines
    assert json.loads((out / "results.json").read_text())["eval"] == res["eval"]
    rows = [r.split("\t") for r in (out / "test_results.tsv").read_text().splitlines()]
    n_test = len(get_processor(task).get_test_examples(out.parent / task))
    assert rows[0] == ["index", "prediction"] and [r[0] for r in rows[1:]] == [str(i) for i in range(n_test)]
    if task == "sts-b": assert all(0 < len(r[1]) and float(r[1]) == float(r[1]) for r in rows[1:])  # scores
    else: assert {r[1] for r in rows[1:]} <= set(get_processor(task).get_labels())
    assert (out / "config.json").exists() and (out / "model.safetensors").exists() and (out / "vocab.txt").exists()
    if task == "mnli":
        assert (out / "eval_results_mm.txt").exists()
        assert len((out / "test_results_mm.tsv").read_text().splitlines()) == 4
        assert "eval_mm" in res


# ---- features ----
def seed_convert_examples_to_features(examples, label_list, max_seq_length, tokenizer):
    "examples/run_classifier.py's loop (classification), with its `_truncate_seq_pair`."
    def truncate(a, b, n):
        while len(a) + len(b) > n:
            (a if len(a) > len(b) else b).pop()
    label_map, out = {l: i for i, l in enumerate(label_list)}, []
    for e in examples:
        a, b = tokenizer.tokenize(e.text_a), None
        if e.text_b:
            b = tokenizer.tokenize(e.text_b)
            truncate(a, b, max_seq_length - 3)
        elif len(a) > max_seq_length - 2: a = a[:max_seq_length - 2]
        tokens, seg = ["[CLS]"] + a + ["[SEP]"], [0] * (len(a) + 2)
        if b:
            tokens += b + ["[SEP]"]
            seg += [1] * (len(b) + 1)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        mask = [1] * len(ids)
        pad = [0] * (max_seq_length - len(ids))
        out.append(InputFeatures(ids + pad, mask + pad, seg + pad, label_map[e.label]))
    return out


def test_features_equal_the_seeds_loop(vocab_path):
    from pytorch_pretrained_bert import BertTokenizer as SeedTokenizer
    tok, seed = BertTokenizer(vocab_path, do_lower_case=True), SeedTokenizer(str(vocab_path), do_lower_case=True)
    long = ("Jim Henson's puppets, built over decades in New York and London, were shown in 1,200 theatres "
            "worldwide. ") * 2
    exs = [InputExample(f"x-{i}", a, b, str(i % 2)) for i, (a, b) in enumerate(
        [("Who was Jim Henson?", "Jim Henson was a puppeteer."), (long, "Short."), ("Short.", long * 3),
         (long, long[:80]), (long, None), ("naïve café", None), (long[:50], long[:51])])]
    for n in (8, 16, 32, 128):
        assert convert_examples_to_features(exs, ["0", "1"], n, tok, "classification") == \
            seed_convert_examples_to_features(exs, ["0", "1"], n, seed)
    a, b = list("abcdef"), list("xy")
    _truncate_seq_pair(a, b, 5)
    assert (a, b) == (list("abc"), list("xy"))


# ---- metrics ----
@pytest.mark.filterwarnings("ignore:A single label was found")
def test_metrics_match_sklearn_and_scipy():
    from scipy import stats
    from sklearn import metrics as skm
    rng = np.random.default_rng(1)
    for n in (10, 101, 1000):
        y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
        assert simple_accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
        assert f1_score(y, p) == pytest.approx(skm.f1_score(y, p), abs=1e-12)
        assert matthews_corrcoef(y, p) == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-12)
        y3, p3 = rng.integers(0, 3, n), rng.integers(0, 3, n)
        assert matthews_corrcoef(y3, p3) == pytest.approx(skm.matthews_corrcoef(y3, p3), abs=1e-12)
        x, s = rng.normal(size=n), np.round(rng.uniform(0, 5, n) * 2) / 2  # half points: ties, as STS-B's gold scores
        assert pearsonr(x, s) == pytest.approx(stats.pearsonr(x, s)[0], abs=1e-12)
        assert spearmanr(x, s) == pytest.approx(stats.spearmanr(x, s)[0], abs=1e-12)
        assert spearmanr(s, s[::-1]) == pytest.approx(stats.spearmanr(s, s[::-1])[0], abs=1e-12)
    for y, p in (([1, 1, 0], [1, 1, 1]), ([0, 0, 0], [0, 0, 0]), ([1, 0], [0, 1])):  # degenerate cases: sklearn's 0
        assert matthews_corrcoef(y, p) == skm.matthews_corrcoef(y, p)
    assert f1_score([0, 1], [0, 0]) == 0.0 and f1_score([1, 1], [1, 1]) == 1.0
    y, p = np.array([1, 0, 1, 1, 0, 1]), np.array([1, 0, 0, 1, 1, 1])
    assert compute_metrics("MRPC", p, y) == pytest.approx({"acc": 4 / 6, "f1": 0.75, "acc_and_f1": (4 / 6 + 0.75) / 2})
    assert compute_metrics("cola", p, y) == pytest.approx({"mcc": skm.matthews_corrcoef(y, p)})
    assert set(compute_metrics("sts-b", [0.1, 0.5, 0.2], [1, 3, 2])) == {"pearson", "spearmanr", "corr"}
    with pytest.raises(ValueError, match="Known GLUE tasks"): compute_metrics("squad", p, y)



def test_metrics_edge_cases_as_the_notebook_draws_them():
    "The notebook's draws: undefined MCC is 0, F1 with no positive is 0, Pearson and the ranks as SciPy's."
    from scipy import stats
    from sklearn import metrics as skm
    from bert_nb.glue import _ranks
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    y3, p3 = rng.integers(0, 3, 300), np.where(rng.random(300) < .6, rng.integers(0, 3, 300), 0)
    assert matthews_corrcoef(y3, p3) == pytest.approx(skm.matthews_corrcoef(y3, p3), abs=1e-12)
    assert matthews_corrcoef([1, 0, 1], [1, 1, 1]) == skm.matthews_corrcoef([1, 0, 1], [1, 1, 1])  # undefined: 0
    assert f1_score([0, 0], [0, 0]) == 0.
    s, t = rng.normal(size=100), np.round(rng.uniform(0, 5, 100), 0)  # rounded: many ties
    assert pearsonr(s, t) == pytest.approx(stats.pearsonr(s, t)[0], abs=1e-12)
    assert np.array_equal(_ranks(t), stats.rankdata(t))

# ---- the saved model ----
def test_saved_model_reloads_to_the_same_predictions(tmp_path, tiny):
    """pytorch-pretrained-bert's notorious bug: a classifier loaded back from its folder scored at chance.
    Here: the same logits, bit for bit."""
    data, out = write_task(tmp_path, "mrpc"), tmp_path / "out"
    res = run_classifier(PARSER.parse_args(flags("mrpc", data, tiny, out, "--do_train", "--do_eval")))
    tok = BertTokenizer.from_pretrained(out, do_lower_case=True)
    feats = convert_examples_to_features(get_processor("mrpc").get_dev_examples(data), ["0", "1"], 24, tok,
                                         "classification")
    reloaded = BertForSequenceClassification.from_pretrained(out, num_labels=2)
    assert reloaded.loading_report.missing == [] and reloaded.loading_report.unexpected == []
    mine, theirs = predict(res["model"], feats), predict(reloaded, feats)
    assert np.array_equal(mine, theirs)
    np.testing.assert_allclose(res["eval_logits"], theirs, atol=1e-6, rtol=0)
    fresh = predict(BertForSequenceClassification.from_pretrained(tiny, num_labels=2), feats)
    assert np.abs(fresh - theirs).max() > 1e-3  # it did train
    assert res["eval"]["acc"] == simple_accuracy(theirs.argmax(-1), [f.label_id for f in feats])
    # evaluating the folder later (the seed's --do_eval with --bert_model OUTPUT_DIR) gives the same scores
    again = run_classifier(PARSER.parse_args(flags("mrpc", data, out, out, "--do_eval")))
    assert again["eval"]["acc"] == res["eval"]["acc"] and again["eval"]["global_step"] == 0


# ---- torchrun ----
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_match_one(tmp_path, tiny):
    "`torchrun --nproc_per_node 2 bert_nb run_classifier` (gloo, CPU), batch 4 per process = one process with batch 8."
    from safetensors.torch import load_file
    train = tsv(MRPC_H, *[(y, i, i, a, b) for i, (a, b, y) in enumerate(PAIRS * 2)])
    data = write_task(tmp_path, "mrpc", **{"train.tsv": train})
    common = ["--do_train", "--do_eval", "--num_train_epochs", "2", "--gradient_accumulation_steps", "2",
              "--logging_steps", "4", "--no_cuda"]
    launcher_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env.update(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "--no-python", str(BERT_NB), "run_classifier",
           *flags("mrpc", data, tiny, tmp_path / "ddp", "--train_batch_size", "4", *common)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one_args = flags("mrpc", data, tiny, tmp_path / "one", "--train_batch_size", "8", *common)
    one = run_classifier(PARSER.parse_args(one_args))
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-6000:]
    ddp_res = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp_res["train"]["step"] == one["train"]["step"] == 4
    a, b = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert a.keys() == b.keys()
    start = load_file(tiny / "model.safetensors")
    assert max((a["bert." + k] - start[k]).abs().max().item() for k in start) > 1e-3  # it trained
    for k in a: torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)
    assert ddp_res["eval"]["acc"] == one["eval"]["acc"]
    assert "eval: acc = " in log and len(losses(tmp_path / "ddp")) == 1  # rank 0 printed and logged, once
    # evaluation alone under torchrun: every process joins the group, rank 0 evaluates, the others leave
    port_at = cmd.index("--master_port") + 1
    cmd = [*cmd[:port_at], str(_free_port()), *cmd[port_at + 1:cmd.index("run_classifier") + 1],
           *flags("mrpc", data, tmp_path / "ddp", tmp_path / "ddp", "--do_eval", "--no_cuda")]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert json.loads((tmp_path / "ddp" / "results.json").read_text())["eval"]["acc"] == one["eval"]["acc"]


# ---- bad input ----
def test_bad_input_says_where(tmp_path, tiny):
    d = write_task(tmp_path, "sst-2", **{"train.tsv": FIXTURES["sst-2"]["train.tsv"] + "a sentence with no label\n"})
    with pytest.raises(ValueError, match=r"sst-2[/\\]train.tsv, line 10: 1 tab-separated column, "
                                         r"but SST-2 train lines have at least 2"):
        get_processor("sst-2").get_train_examples(d)
    dev = FIXTURES["mnli"]["dev_matched.tsv"].replace("\tentailment\n", "\tentailed\n")
    d = write_task(tmp_path, "mnli", **{"dev_matched.tsv": dev})
    with pytest.raises(ValueError, match=r"dev_matched.tsv, line 3: label 'entailed' is not one of MNLI's labels "
                                         r"\['contradiction', 'entailment', 'neutral'\]"):
        get_processor("mnli").get_dev_examples(d)
    d = write_task(tmp_path, "cola",
                   **{"train.tsv": FIXTURES["cola"]["train.tsv"].replace("clc95\t0\t*", "clc95\t2\t*", 1)})
    with pytest.raises(ValueError, match=r"train.tsv, line 2: label '2' is not one of CoLA's labels \['0', '1'\]"):
        get_processor("cola").get_train_examples(d)
    d = write_task(tmp_path, "rte")
    (d / "dev.tsv").write_bytes(FIXTURES["rte"]["dev.tsv"].encode() + b"9\tcaf\xe9\tx\tentailment\n")
    with pytest.raises(ValueError, match=r"rte[/\\]dev.tsv, line 6: not UTF-8 text"):
        get_processor("rte").get_dev_examples(d)
    d = write_task(tmp_path, "qqp", **{"train.tsv": FIXTURES["qqp"]["train.tsv"] + "77\t1\t2\tonly one question?\n"})
    # pytorch-pretrained-bert's QQP processor skipped such lines; so does this one
    assert len(get_processor("qqp").get_train_examples(d)) == 8
    with pytest.raises(ValueError, match="Task not found: 'squad'. Known GLUE tasks: cola, mnli, mnli-mm, mrpc, sst-2, "
                                         "sts-b, qqp, qnli, rte, wnli"):
        run_classifier(PARSER.parse_args(flags("squad", d, tiny, tmp_path / "o", "--do_train")))
    with pytest.raises(FileNotFoundError, match=r"dev.tsv not found; .* holds: test.tsv, train.tsv"):
        (tmp_path / "only").mkdir()
        (tmp_path / "only" / "train.tsv").write_text("x")
        (tmp_path / "only" / "test.tsv").write_text("x")
        get_processor("rte").get_dev_examples(tmp_path / "only")
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"already exists and is not empty \(keep.txt\): pass --overwrite_output_dir"):
        run_classifier(PARSER.parse_args(flags("mrpc", write_task(tmp_path, "mrpc"), tiny, out, "--do_train")))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    res = run_classifier(PARSER.parse_args(flags("mrpc", write_task(tmp_path, "mrpc"), tiny, out, "--do_train",
                                                 "--overwrite_output_dir", "--max_steps", "2")))
    assert res["train"]["step"] == 2 and (out / "keep.txt").exists()
    with pytest.raises(ValueError, match="At least one of `do_train`, `do_eval` or `do_predict`"):
        run_classifier(PARSER.parse_args(flags("mrpc", write_task(tmp_path, "mrpc"), tiny, tmp_path / "o")))


def test_the_seeds_command_line_parses():
    "README's MRPC command for the seed's run_classifier.py, plus every flag it had, parses as is."
    ns = PARSER.parse_args("--task_name MRPC --do_train --do_eval --do_lower_case --data_dir /glue/MRPC/ "
                           "--bert_model bert-base-uncased --max_seq_length 128 --train_batch_size 32 "
                           "--learning_rate 2e-5 --num_train_epochs 3.0 --output_dir /tmp/mrpc_output/ "
                           "--eval_batch_size 8 --warmup_proportion 0.1 --no_cuda --local_rank -1 --seed 42 "
                           "--gradient_accumulation_steps 1 "
                           "--fp16 --loss_scale 128 --cache_dir /tmp/c --server_ip '' --server_port ''".split())
    assert (ns.task_name, ns.max_seq_length, ns.train_batch_size, ns.learning_rate, ns.fp16, ns.loss_scale,
            ns.cache_dir) == \
        ("MRPC", 128, 32, 2e-5, True, 128, "/tmp/c")
    d = PARSER.parse_args("--task_name x --data_dir d --bert_model b --output_dir o".split())
    assert (d.max_seq_length, d.train_batch_size, d.eval_batch_size, d.learning_rate, d.num_train_epochs,
            d.warmup_proportion, d.seed, d.do_lower_case, d.do_predict, d.bf16, d.max_steps,
            d.overwrite_output_dir) == \
        (128, 32, 8, 5e-5, 3.0, 0.1, 42, False, False, False, None, False)


# ---- the demo ----
def test_demo_data_is_mrpc_shaped_and_reproducible(tmp_path):
    rows = {s: read_tsv(DEMO_DATA_DIR / f"{s}.tsv") for s in ("train", "dev")}
    for split, n in (("train", 640), ("dev", 160)):
        r = rows[split]
        assert r[0][1] == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"] and len(r) == n + 1
        assert all(len(c) == 5 and c[0] in ("0", "1") and c[1].isdigit() and c[2].isdigit() and c[3] and c[4]
                   and c[3] != c[4] for _, c in r[1:])
        assert sum(c[0] == "1" for _, c in r[1:]) == round(0.6 * n)
    pairs = [tuple(c[3:]) for s in rows.values() for _, c in s[1:]]
    assert len(set(pairs)) == len(pairs)  # no pair twice, none shared by train and dev
    assert len(get_processor("mrpc").get_train_examples(DEMO_DATA_DIR)) == 640
    # the generator writes the same bytes
    script = ROOT / "bert_nb" / "data" / "make_paraphrase_demo.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    for s in ("train", "dev"): assert (tmp_path / f"{s}.tsv").read_bytes() == (DEMO_DATA_DIR / f"{s}.tsv").read_bytes()


def test_demo_quick(tmp_path):
    """Two optimizer steps of the real demo: it prints the data, the new head, dev scores against the majority class,
    where it wrote."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        args = ["--output_dir", str(tmp_path / "d"), "--max_steps", "2", "--no_progress"]
        res = demo(add_demo_arguments(argparse.ArgumentParser()).parse_args(args))
    out = buf.getvalue()
    for s in ("all-MiniLM-L6-v2", "640 train, 160 dev pairs",
              "task heads newly initialized: train them (2): classifier.weight, classifier.bias",
              "dev set, 160 pairs, after 2 steps", "majority class (always '1')", "0.600   0.750", "loss_curve.png",
              f"wrote {display_path(tmp_path / 'd')}/:"):
        assert s in out, (s, out)
    assert res["train"]["step"] == 2 and res["baseline"] == pytest.approx({"acc": 0.6, "f1": 0.75, "acc_and_f1": 0.675})
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == \
        ["config.json", "eval_results.txt", "loss_curve.png", "metrics.csv", "metrics.jsonl", "model.safetensors",
         "results.json", "vocab.txt"]
