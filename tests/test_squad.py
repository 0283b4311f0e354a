"""SQuAD (bert_nb.squad): reading and its errors, the round trip of every gold answer of the sample through
windows and back to text, predictions from hand-made logits, the official metrics on hand-computed cases,
the features cache, and `run_squad` / `evaluate_squad` end to end with a tiny model on the CPU."""
import contextlib, dataclasses, io, json, logging, shutil
from pathlib import Path

import pytest

from bert_nb.heads import save_tiny_bert
from bert_nb import BertForQuestionAnswering, BertTokenizer
from bert_nb import cli
from bert_nb.squad import (RawResult, SquadExample, SquadFormatError, _span_text, compute_f1,
                           convert_examples_to_features, evaluate_squad, evaluate_v1, evaluate_v2, get_final_text,
                           load_or_build_features,
                           normalize_answer, read_squad_examples, run_squad, squad_args, write_predictions)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "bert_nb" / "data" / "squad_sample"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tok(vocab_path): return BertTokenizer(vocab_path, do_lower_case=True)


@pytest.fixture
def data(tmp_path):
    "A copy of the sample (the features cache is written next to the data)."
    shutil.copytree(SAMPLE, tmp_path / "data")
    return tmp_path / "data"


def write_json(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def one_paragraph(qas, context="The cat sat on the mat."):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_sample_sizes():
    sizes = {p.stem: sum(len(para["qas"]) for a in json.loads(p.read_text())["data"] for para in a["paragraphs"])
             for p in sorted(SAMPLE.glob("*.json"))}
    assert sizes == {"dev-v1.1": 24, "dev-v2.0": 32, "train-v1.1": 38, "train-v2.0": 47}
    assert "written for this project" in (SAMPLE / "README.md").read_text()


def test_read_v1_and_v2():
    train = read_squad_examples(SAMPLE / "train-v1.1.json", is_training=True)
    assert (len(train), train.skipped) == (38, 0)
    ex = train[1]
    words = ex.doc_tokens[ex.start_position:ex.end_position + 1]
    assert " ".join(words) == ex.orig_answer_text == "about 14 kilometres"
    v2 = read_squad_examples(SAMPLE / "train-v2.0.json", is_training=True, version_2_with_negative=True)
    neg = [e for e in v2 if e.is_impossible]
    assert len(neg) == 9 and all((e.start_position, e.end_position, e.orig_answer_text) == (-1, -1, "") for e in neg)
    assert sum(bool(e.plausible_answers) for e in neg) == 8
    dev = read_squad_examples(SAMPLE / "dev-v2.0.json", is_training=False, version_2_with_negative=True)
    assert len(dev) == 32 and all(e.start_position is None for e in dev)


@pytest.mark.parametrize("qas, message", [
    ([{"id": "q0", "question": "?"}], "bad.json: data[0].paragraphs[0].qas[0]: missing 'answers'"),
    ([{"id": "q0", "question": "?", "answers": [{"text": "mat"}]}],
     "data[0].paragraphs[0].qas[0].answers[0]: missing 'answer_start'"),
    ([{"id": 7, "question": "?", "answers": []}], "data[0].paragraphs[0].qas[0].id: expected str, got int"),
    ([{"id": "q0", "question": "?", "answers": []}],
     "qas[0]: for training, each question should have exactly 1 answer, it has 0"),
])
def test_malformed_file_names_file_and_path(tmp_path, qas, message):
    with pytest.raises(SquadFormatError, match=message.replace("[", r"\[").replace("]", r"\]").replace("?", r"\?")):
        read_squad_examples(write_json(tmp_path / "bad.json", one_paragraph(qas)), is_training=True)


def test_bad_json_missing_file_and_v2_flag(tmp_path):
    with pytest.raises(SquadFormatError, match=r"bad.json: not valid JSON: .* line 1"):
        read_squad_examples(write_json(tmp_path / "bad.json", '{"data": [}'), True)
    with pytest.raises(FileNotFoundError, match="SQuAD file not found: .*nowhere.json"):
        read_squad_examples(tmp_path / "nowhere.json", True)
    ok = one_paragraph([{"id": "q0", "question": "?", "answers": [{"text": "the mat", "answer_start": 15}]}])
    with pytest.raises(SquadFormatError, match=r"qas\[0\]: missing 'is_impossible'"):
        read_squad_examples(write_json(tmp_path / "v1.json", ok), True, version_2_with_negative=True)


def test_answer_not_at_offset_is_counted_and_skipped(tmp_path, caplog):
    qa = lambda i, start: {"id": f"q{i}", "question": "Where?", "answers": [{"text": "the mat", "answer_start": start}]}
    path = write_json(tmp_path / "off.json", one_paragraph([qa(0, 15), qa(1, 3), qa(2, 99)]))
    with caplog.at_level(logging.WARNING, logger="bert_nb.squad"):
        exs = read_squad_examples(path, is_training=True)
    assert [e.qas_id for e in exs] == ["q0"] and exs.skipped == 2
    assert "qas[1].answers[0]: could not find answer 'the mat' at answer_start 3" in caplog.text
    assert "skipped 2 answers" in caplog.text
    assert len(read_squad_examples(path, is_training=False)) == 3   # predictions are still made for them


def test_round_trip_every_gold_answer(tok):
    "Every gold (and plausible) answer -> windows -> start/end -> get_final_text gives back the gold text."
    n = windows = cut = 0
    for path in sorted(SAMPLE.glob("*.json")):
        for ex in read_squad_examples(path, is_training=False, version_2_with_negative="v2.0" in path.name):
            for text, s, e in ex.answers + ex.plausible_answers:
                gold = dataclasses.replace(ex, orig_answer_text=text, start_position=s, end_position=e,
                                           is_impossible=False)
                fs = convert_examples_to_features([gold], tok, 64, 24, 16, is_training=True)
                inside = [f for f in fs if f.start_position > 0]
                assert inside, f"{ex.qas_id}: {text!r} is in no window"
                for f in inside:
                    assert _span_text(gold, f, f.start_position, f.end_position, True) == text, (ex.qas_id, text)
                cut += sum(1 for f in fs
                           if not f.start_position and any(s <= w <= e for w in f.token_to_orig_map.values()))
                n += 1
                windows += len(inside)
    print(f"round trip: {n} gold answers, {windows} windows holding them, {cut} windows cutting one")
    assert n == 167 and cut > 0


def test_get_final_text():
    assert get_final_text("steve smith", "Steve Smith's", True) == "Steve Smith"
    assert get_final_text("cafe merida", "Café Mérida,", True) == "Café Mérida"
    assert get_final_text("zebra", "Steve Smith's", True) == "Steve Smith's"


def test_write_predictions_by_hand(tok, tmp_path):
    ex = SquadExample("q", "Who was the last keeper?", "The last keeper, Thomas Brant, left in 1989.".split())
    f = convert_examples_to_features([ex], tok, 32, 16, 16, is_training=False)[0]
    def logits(**at):
        x = [-10.] * 32
        x[0] = 0.5
        for t, v in at.items(): x[f.tokens.index(t)] = v
        return x
    res = [RawResult(f.unique_id, logits(thomas=3., left=3.5), logits(brant=2., left=1.))]
    files = [tmp_path / n for n in ("predictions.json", "nbest_predictions.json", "null_odds.json")]
    preds, nbest, _ = write_predictions([ex], [f], res, 20, 30, True, *files, False, False, 0.)
    assert preds == {"q": "Thomas Brant"}
    assert [n["text"] for n in nbest["q"]][:3] == ["Thomas Brant", "left", "Thomas Brant, left"]
    assert sum(n["probability"] for n in nbest["q"]) == pytest.approx(1.)
    assert json.loads(files[0].read_text()) == preds
    assert json.loads(files[1].read_text())["q"][0]["probability"] == pytest.approx(nbest["q"][0]["probability"])
    preds, _, odds = write_predictions([ex], [f], res, 20, 30, True, *files, False, True, 0.)
    assert (preds, odds, json.loads(files[2].read_text())) == ({"q": "Thomas Brant"}, {"q": -4.}, {"q": -4.})
    assert write_predictions([ex], [f], res, 20, 30, True, *files, False, True, -4.5)[0] == {"q": ""}


V2 = {"version": "2.0", "data": [{"title": "t", "paragraphs": [{"context": "...", "qas": [
    {"id": "a1", "question": "?",
     "answers": [{"text": "Thomas Brant", "answer_start": 0}, {"text": "Brant", "answer_start": 0}]},
    {"id": "a2", "question": "?", "answers": [{"text": "31 metres", "answer_start": 0}]},
    {"id": "n1", "question": "?", "answers": [], "is_impossible": True},
    {"id": "n2", "question": "?", "answers": [], "is_impossible": True}]}]}]}
PREDS = {"a1": "Thomas Brant", "a2": "the 31 metres tall tower", "n1": "", "n2": "Dunmore"}


def test_normalization_and_f1():
    assert normalize_answer("An apple, a pear and THE theatre") == "apple pear and theatre"
    assert compute_f1("31 metres", "the 31 metres tall tower") == pytest.approx(2 / 3)   # P = 2/4, R = 2/2
    assert (compute_f1("", ""), compute_f1("", "x")) == (1, 0)


def test_evaluate_v2_by_hand():
    r = evaluate_v2(V2, PREDS)
    assert list(r) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
                       "NoAns_total"]
    assert r["exact"] == 50. and r["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 4)
    assert (r["HasAns_f1"], r["NoAns_exact"], r["NoAns_total"]) == (pytest.approx(100 * (5 / 3) / 2), 50., 2)
    r = evaluate_v2(V2, PREDS, {"a1": -3., "a2": -1., "n1": 2., "n2": 0.5}, na_prob_thresh=0.)
    assert (r["exact"], r["NoAns_exact"], r["best_exact"], r["best_exact_thresh"]) == (75., 100., 75., -3.)
    with pytest.raises(ValueError, match="no prediction for 1 questions"):
        evaluate_v2(V2, {k: v for k, v in PREDS.items() if k != "n2"})


def test_evaluate_v1_by_hand_and_cli(tmp_path, capsys):
    qas = V2["data"][0]["paragraphs"][0]["qas"][:2]
    v1 = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "...", "qas": qas}]}]}
    assert evaluate_v1(v1, {"a1": "brant", "a2": "metres"}) == \
        {"exact_match": 50., "f1": pytest.approx(100 * (1 + 2 / 3) / 2)}
    assert evaluate_v1(v1, {"a1": "brant"}) == {"exact_match": 50., "f1": 50.}   # unanswered: 0
    d1, p1 = write_json(tmp_path / "d1.json", v1), write_json(tmp_path / "p1.json", {"a1": "brant", "a2": "metres"})
    assert cli.main(["evaluate_squad", str(d1), str(p1)]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(evaluate_squad(d1, p1)) + "\n" and out.startswith('{"exact_match": 50.0, "f1": 83.33')
    d2, p2 = write_json(tmp_path / "d2.json", V2), write_json(tmp_path / "p2.json", PREDS)
    assert cli.main(["evaluate_squad", str(d2), str(p2), "--version", "2"]) == 0
    assert capsys.readouterr().out == json.dumps(evaluate_v2(V2, PREDS), indent=2) + "\n"


def test_features_cache(tok, data):
    _, built = load_or_build_features(data / "train-v2.0.json", tok, 64, 24, 16, True, True)
    assert len(list(data.glob("*.features.pt"))) == 1
    _, loaded = load_or_build_features(data / "train-v2.0.json", tok, 64, 24, 16, True, True)
    assert loaded == built
    (data / "train-v2.0.json").write_text((data / "train-v2.0.json").read_text().replace("granite", "basalt"))
    load_or_build_features(data / "train-v2.0.json", tok, 64, 24, 16, True, True)
    assert len(list(data.glob("*.features.pt"))) == 2   # the file changed: another key


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, vocab_path):
    "A random 2-layer BERT over the real vocabulary, saved as a folder `run_squad --bert_model` reads."
    return save_tiny_bert(tmp_path_factory.mktemp("tiny"), vocab_path, BertForQuestionAnswering,
                          max_position_embeddings=128)


@pytest.mark.parametrize("v2", [False, True], ids=["v1.1", "v2.0"])
def test_run_squad_tiny_model_end_to_end(tiny_model, data, tmp_path, v2):
    v = "v2.0" if v2 else "v1.1"
    out = tmp_path / "out"
    r = run_squad(squad_args(bert_model=str(tiny_model), output_dir=str(out), train_file=str(data / f"train-{v}.json"),
                             predict_file=str(data / f"dev-{v}.json"), do_train=True, do_predict=True,
                             do_lower_case=True, version_2_with_negative=v2, max_seq_length=96, doc_stride=48,
                             max_query_length=24, train_batch_size=16, learning_rate=2e-3, num_train_epochs=4,
                             logging_steps=2, progress=False, plot=False, no_cuda=True))
    losses = [json.loads(l)["loss"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert losses[-1] < 0.8 * losses[0], losses
    names = {"predictions.json", "nbest_predictions.json", "config.json", "model.safetensors", "vocab.txt"}
    names |= {"null_odds.json"} if v2 else set()
    assert names <= {p.name for p in out.iterdir()}
    assert ("null_odds.json" in {p.name for p in out.iterdir()}) == v2
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == (32 if v2 else 24)
    assert ("eval_exact" if v2 else "eval_exact_match") in r


def test_run_squad_command_line_predict_only(tiny_model, data, tmp_path):
    "`bert_nb run_squad` with the seed's flags; the second run reads the features cache."
    argv = ["run_squad", "--bert_model", str(tiny_model), "--output_dir", str(tmp_path / "o"), "--do_predict",
            "--do_lower_case", "--predict_file", str(data / "dev-v1.1.json"), "--max_seq_length", "64",
            "--doc_stride", "32", "--no_progress", "--no_cuda"]
    with contextlib.redirect_stdout(io.StringIO()) as o: assert cli.main(argv) == 0
    assert set(json.loads(o.getvalue())) == {"eval_exact_match", "eval_f1"}
    assert len(list(data.glob("dev-v1.1.json.predict-64-32-64-*.features.pt"))) == 1
    first = (tmp_path / "o" / "nbest_predictions.json").read_text()
    with contextlib.redirect_stdout(io.StringIO()): assert cli.main(argv) == 0
    assert (tmp_path / "o" / "nbest_predictions.json").read_text() == first


def test_run_squad_argument_errors(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="At least one of `do_train` or `do_predict` must be True"):
        run_squad(squad_args(bert_model=str(tiny_model), output_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="SQuAD file not found: .*nope.json"):
        run_squad(squad_args(bert_model=str(tiny_model), output_dir=str(tmp_path), do_predict=True,
                             predict_file=str(tmp_path / "nope.json")))
    with pytest.raises(ValueError, match="leaves no room for the paragraph"):
        run_squad(squad_args(bert_model=str(tiny_model), output_dir=str(tmp_path), do_predict=True,
                             predict_file=str(SAMPLE / "dev-v1.1.json"), do_lower_case=True, max_seq_length=8))
    with pytest.raises(TypeError, match="unknown run_squad arguments"): squad_args(max_seq_len=3)
