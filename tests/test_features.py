"""`bert_nb extract_features` writes what Google's extract_features.py writes: the reader, the framing and truncation,
the JSON layout and rounding, atomic output; and, with TensorFlow, the same file as Google's own script on one checkpoint."""
import ast, codecs, collections, contextlib, importlib, io, json, re, shutil, types
from pathlib import Path

import pytest
import torch

from bert_nb.cli import main
from bert_nb.config import BertConfig
from bert_nb.features import (InputExample, convert_examples_to_features, extract_features, feature_records, parse_layers,
                              read_examples)
from bert_nb.hub import minilm_dir
from bert_nb.modeling import BertModel
from bert_nb.tokenization import BertTokenizer

LINES = ["Who was Jim Henson?",
         "Jim Henson was a puppeteer ||| He created the Muppets in 1955.",
         "",
         "The naïve café owner's résumé wasn't unaffable, and this sentence goes on well past sixteen word pieces.",
         "BERT splits 北京 into characters. ||| A second text that is long enough to be cut as well, surely.",
         "  spaces around  "]


@pytest.fixture(scope="module")
def tok(): return BertTokenizer(minilm_dir() / "vocab.txt")


def tiny_model(seed=0):
    "A 2-layer BERT with the real vocabulary and large random weights (biases and LayerNorms too), so that any slip shows."
    torch.manual_seed(seed)
    m = BertModel(BertConfig(30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             max_position_embeddings=32, initializer_range=0.2))
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.1 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_model().save_pretrained(d); shutil.copy(minilm_dir() / "vocab.txt", d)
    return d


def google_convert(example, seq_length, tokenizer):
    "Google's convert_examples_to_features for one example, step by step: (tokens, input_ids, input_mask, input_type_ids)."
    a, b = tokenizer.tokenize(example.text_a), tokenizer.tokenize(example.text_b) if example.text_b else None
    if b:
        while len(a) + len(b) > seq_length - 3: (a if len(a) > len(b) else b).pop()
    else: a = a[:seq_length - 2]
    tokens = ["[CLS]"] + a + ["[SEP]"] + (b + ["[SEP]"] if b else [])
    types = [0] * (len(a) + 2) + ([1] * (len(b) + 1) if b else [])
    ids, pad = tokenizer.convert_tokens_to_ids(tokens), seq_length - len(tokens)
    return tokens, ids + [0] * pad, [1] * len(tokens) + [0] * pad, types + [0] * pad


def test_read_examples_as_google(tmp_path):
    f = tmp_path / "in.txt"
    f.write_bytes(("\r\n".join(LINES) + "\r\n").encode())
    exs = read_examples(f)
    assert [e.unique_id for e in exs] == list(range(len(LINES)))
    assert (exs[1].text_a, exs[1].text_b) == ("Jim Henson was a puppeteer", "He created the Muppets in 1955.")
    assert (exs[2].text_a, exs[2].text_b) == ("", None)
    assert (exs[5].text_a, exs[5].text_b) == ("spaces around", None)
    f.write_text("a ||| b ||| c\nx|||y")  # greedy; the bars need a space either side; no newline at the end
    assert [(e.text_a, e.text_b) for e in read_examples(f)] == [("a ||| b", "c"), ("x|||y", None)]


def test_bad_input_names_file_and_line(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"empty.txt, line 1: the file is empty"): read_examples(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"fine\nalso fine\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 3: not UTF-8"): read_examples(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt"): read_examples(tmp_path / "missing.txt")


@pytest.mark.parametrize("seq_length", [8, 16, 128])
def test_features_frame_truncate_and_pad_as_google(tok, seq_length):
    exs = [InputExample(i, *(l.split(" ||| ") if " ||| " in l else (l, None))) for i, l in enumerate(LINES)]
    exs.append(InputExample(len(exs), "a second text with no pieces", "\x07\u200b"))  # Google tests b's pieces
    for e, f in zip(exs, convert_examples_to_features(exs, seq_length, tok)):
        assert (f.tokens, f.input_ids, f.input_mask, f.input_type_ids) == google_convert(e, seq_length, tok), e


def test_records_are_the_model_states_rounded(tok):
    model = tiny_model()
    fs = convert_examples_to_features(read_examples_from(LINES), 16, tok)
    recs = list(feature_records(model, fs, [-1, -2, 0], batch_size=4))
    assert [r["linex_index"] for r in recs] == list(range(len(LINES)))
    with torch.no_grad():
        layers, _ = model(torch.tensor([f.input_ids for f in fs]), torch.tensor([f.input_type_ids for f in fs]),
                          torch.tensor([f.input_mask for f in fs]))
    for r, f, b in zip(recs, fs, range(len(fs))):
        assert list(r) == ["linex_index", "features"] and [x["token"] for x in r["features"]] == f.tokens
        for i, x in enumerate(r["features"]):
            assert list(x) == ["token", "layers"] and [l["index"] for l in x["layers"]] == [-1, -2, 0]
            for l in x["layers"]:
                want = [round(v, 6) for v in layers[l["index"]][b, i].tolist()]
                assert max(abs(u - v) for u, v in zip(l["values"], want)) <= 2e-6  # batching and trimming move the 7th digit at most


def read_examples_from(lines):
    return [InputExample(i, *(l.strip().split(" ||| ") if " ||| " in l else (l.strip(), None))) for i, l in enumerate(lines)]


def test_layers_are_checked(tiny_dir, tmp_path):
    assert parse_layers("-1,-2,-3,-4", 4) == [-1, -2, -3, -4]
    (tmp_path / "in.txt").write_text("hello\n")
    with pytest.raises(ValueError, match=r"layer\(s\) \[-3\] do not exist; the model has 2 layers"):
        extract_features(tmp_path / "in.txt", tmp_path / "out.jsonl", tiny_dir, layers="-1,-3")
    with pytest.raises(ValueError, match="comma-separated"): parse_layers("last")


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def test_cli_writes_json_lines_atomically(tiny_dir, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(LINES) + "\n")
    out = tmp_path / "out.jsonl"
    rc, stdout, _ = run_cli("extract_features", "--input_file", str(tmp_path / "in.txt"), "--output_file", str(out),
                            "--bert_model", str(tiny_dir), "--layers", "-1,-2", "--max_seq_length", "16", "--batch_size", "4", "--no_cuda")
    assert rc == 0 and "6 lines" in stdout
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["linex_index"] for r in recs] == list(range(6))
    assert len(recs[3]["features"]) == 16 and len(recs[2]["features"]) == 2  # truncated; [CLS] [SEP]
    assert all(len(l["values"]) == 32 for r in recs for x in r["features"] for l in x["layers"])
    before = out.read_bytes()
    (tmp_path / "empty.txt").write_text("")
    rc, _, err = run_cli("extract_features", "--input_file", str(tmp_path / "empty.txt"), "--output_file", str(out),
                         "--bert_model", str(tiny_dir), "--no_cuda")
    assert rc == 1 and "empty.txt, line 1" in err
    assert out.read_bytes() == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_interrupted_run_leaves_no_file(tiny_dir, tmp_path, monkeypatch):
    "A failure while the records are written (here: the third batch) leaves neither the output nor a temporary file."
    import bert_nb.features as features
    (tmp_path / "in.txt").write_text("one\ntwo\nthree\n")
    real = features._record
    calls = []
    def failing(*a):
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt
        return real(*a)
    monkeypatch.setattr(features, "_record", failing)
    with pytest.raises(KeyboardInterrupt):
        extract_features(tmp_path / "in.txt", tmp_path / "out.jsonl", tiny_dir, layers="-1", batch_size=1, no_cuda=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


# --- Against Google's own script -------------------------------------------------------------------------------

TF_REASON = "comparing with Google's extract_features.py needs TensorFlow and bert-tensorflow: pip install 'bert_nb[tf]'"


def google_extract_features_main(flags:dict):
    """Run Google's extract_features.py `main()` with `flags`: its own reader, tokenizer, features, model_fn and JSON writer.
    Only `tf.estimator.tpu` (gone from TensorFlow 2) is replaced, by a session that runs `model_fn`'s predictions batch by batch."""
    tf = pytest.importorskip("tensorflow", reason=TF_REASON)
    pytest.importorskip("bert", reason=TF_REASON)
    convert = importlib.import_module("bert_nb.convert")
    if not hasattr(convert, "google_bert_modeling"): pytest.skip("bert_nb.convert has no google_bert_modeling (notebook 05)")
    modeling = convert.google_bert_modeling("erf")  # the exact GELU, as BertConfig's hidden_act='gelu'
    from absl import flags as absl_flags
    from bert import tokenization
    if not absl_flags.FLAGS.is_parsed(): absl_flags.FLAGS.mark_as_parsed()  # its --preserve_unused_tokens (default False)
    v1 = tf.compat.v1

    class Estimator:
        def __init__(self, use_tpu, model_fn, config, predict_batch_size): self.model_fn, self.batch_size = model_fn, predict_batch_size
        def predict(self, input_fn, yield_single_examples=True):
            with tf.Graph().as_default():
                features = v1.data.make_one_shot_iterator(input_fn({"batch_size": self.batch_size})).get_next()
                predictions = self.model_fn(features, None, "infer", {})["predictions"]
                with v1.Session() as sess:
                    sess.run(v1.global_variables_initializer())  # init_from_checkpoint made these the checkpoint's values
                    while True:
                        try: batch = sess.run(predictions)
                        except tf.errors.OutOfRangeError: return
                        for i in range(len(batch["unique_id"])): yield {k: v[i] for k, v in batch.items()}

    tpu = types.SimpleNamespace(InputPipelineConfig=types.SimpleNamespace(PER_HOST_V2=2), RunConfig=lambda **kw: kw,
                                TPUConfig=lambda **kw: kw, TPUEstimator=Estimator,
                                TPUEstimatorSpec=lambda mode, predictions, scaffold_fn: {"predictions": predictions})
    estimator = types.SimpleNamespace(ModeKeys=types.SimpleNamespace(PREDICT="infer"), tpu=tpu)
    tf_v1 = type("TFv1", (), {"__getattr__": lambda self, k: estimator if k == "estimator" else getattr(v1, k)})()
    path = Path(modeling.__file__).with_name("extract_features.py")
    defs = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]  # not its flags
    ns = dict(modeling=modeling, tokenization=tokenization, tf=tf_v1, codecs=codecs, collections=collections, json=json, re=re,
              FLAGS=types.SimpleNamespace(use_tpu=False, master=None, num_tpu_cores=8, use_one_hot_embeddings=False, **flags),
              __name__="bert.extract_features")
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(path), "exec"), ns)
    ns["main"](None)


def test_matches_google_extract_features(tmp_path, tiny_dir):
    "Google's extract_features.py and `bert_nb extract_features`, same checkpoint and lines: same JSON, values within 1e-5."
    convert = pytest.importorskip("bert_nb.convert")
    if not hasattr(convert, "save_tf_checkpoint"): pytest.skip("bert_nb.convert has no save_tf_checkpoint (notebook 05)")
    (tmp_path / "in.txt").write_text("\n".join(LINES) + "\n")
    ckpt = convert.save_tf_checkpoint(BertModel.from_pretrained(tiny_dir), tmp_path / "tf" / "bert_model.ckpt")
    google_extract_features_main(dict(input_file=str(tmp_path / "in.txt"), output_file=str(tmp_path / "google.jsonl"),
                                      layers="-1,-2,0", bert_config_file=str(tmp_path / "tf" / "bert_config.json"),
                                      max_seq_length=16, init_checkpoint=ckpt, vocab_file=str(minilm_dir() / "vocab.txt"),
                                      do_lower_case=True, batch_size=4))
    extract_features(tmp_path / "in.txt", tmp_path / "ours.jsonl", tiny_dir, layers="-1,-2,0", max_seq_length=16, batch_size=4,
                     no_cuda=True)
    google = (tmp_path / "google.jsonl").read_text().splitlines()
    ours = (tmp_path / "ours.jsonl").read_text().splitlines()
    assert len(google) == len(ours) == len(LINES)
    worst = 0.
    for g, o in zip(map(json.loads, google), map(json.loads, ours)):
        assert list(o) == list(g) == ["linex_index", "features"] and o["linex_index"] == g["linex_index"]
        assert [x["token"] for x in o["features"]] == [x["token"] for x in g["features"]]
        for xo, xg in zip(o["features"], g["features"]):
            assert list(xo) == list(xg) and [l["index"] for l in xo["layers"]] == [l["index"] for l in xg["layers"]] == [-1, -2, 0]
            for lo, lg in zip(xo["layers"], xg["layers"]):
                assert len(lo["values"]) == len(lg["values"]) == 32
                worst = max(worst, max(abs(a - b) for a, b in zip(lo["values"], lg["values"])))
    assert worst <= 1e-5, f"largest difference from Google's values: {worst:.2e}"
