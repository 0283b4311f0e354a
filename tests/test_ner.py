"""`bert_nb run_ner`: the CoNLL reader (and its errors, with file and line), entity-level scores as seqeval computes
them (hand-computed cases; against seqeval itself when it is installed), first-piece labels, and the command end to
end."""
import contextlib, io, json, random, shutil

import pytest
import torch

from bert_nb.heads import save_tiny_bert
from bert_nb.cli import main
from bert_nb.config import BertConfig
from bert_nb.heads import BertForTokenClassification
from bert_nb.hub import minilm_dir
from bert_nb.ner import (CONLL2003_LABELS, NER_SAMPLE_DIR, NerExample, entity_scores, get_entities,
                         ner_features, ner_metrics, read_conll, read_label_list, word_predictions)
from bert_nb.tokenization import BertTokenizer


@pytest.fixture(scope="module")
def tok(): return BertTokenizer(minilm_dir() / "vocab.txt")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny"), minilm_dir() / "vocab.txt")


# --- reading ---------------------------------------------------------------------------------------------------

def test_sample_is_in_conll_layout():
    for name, n in (("train.txt", 44), ("dev.txt", 20)):
        lines = (NER_SAMPLE_DIR / name).read_text().split("\n")
        assert lines[0] == "-DOCSTART- -X- -X- O" and lines[1] == ""
        assert all(len(l.split()) == 4 for l in lines if l), "token POS chunk tag on every line"
        exs = read_conll(NER_SAMPLE_DIR / name, CONLL2003_LABELS)
        tokens = sum(1 for l in lines if l and not l.startswith("-DOCSTART-"))
        assert len(exs) == n and sum(map(len, (e.words for e in exs))) == tokens
    assert (NER_SAMPLE_DIR / "README.md").read_text().count("written\nfor this project") == 1


def test_reader_keeps_token_tag_and_lines(tmp_path):
    (tmp_path / "a.txt").write_text("-DOCSTART- -X- -X- O\n\nJim NNP B-NP B-PER\nHenson NNP I-NP I-PER\n\n\n"
                                    "-DOCSTART- -X- -X- O\nHi UH B-INTJ O\n")
    a, b = read_conll(tmp_path / "a.txt", CONLL2003_LABELS)
    assert (a.words, a.labels, a.lines, b.words, b.lines) == \
        (["Jim", "Henson"], ["B-PER", "I-PER"], [3, 4], ["Hi"], [8])
    (tmp_path / "b.txt").write_text("Jim\tB-PER\r\nHenson\tI-PER\r\n")  # two columns, tabs, CRLF
    assert read_conll(tmp_path / "b.txt")[0].labels == ["B-PER", "I-PER"]


@pytest.mark.parametrize("text, message", [
    ("Jim NNP B-NP B-PER\nHenson NNP I-PER\n", "bad.txt, line 2: 3 fields, but line 1 has 4"),
    ("-DOCSTART- -X- -X- O\n\nJim NNP B-NP B-PER\n\nHenson NNP I-NP I-PER extra\n",
     "bad.txt, line 5: 5 fields, but line 3 has 4"),
    ("Jim NNP B-NP B-PER\nHenson NNP I-NP I-PERSON\n", "bad.txt, line 2: tag 'I-PERSON' is not in the label list"),
    ("Jim\n", "bad.txt, line 1: 1 field"),
    ("", "bad.txt, line 1: the file is empty"),
    ("\n \n", "bad.txt, line 1: the file is empty"),
    ("-DOCSTART- -X- -X- O\n\n", "no sentences"),
])
def test_bad_files_name_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(ValueError, match=message): read_conll(tmp_path / "bad.txt", CONLL2003_LABELS)


def test_non_utf8_and_missing_files(tmp_path):
    (tmp_path / "bad.txt").write_bytes("Jim B-PER\n\nCaf\xe9 O\n".encode("latin-1"))
    with pytest.raises(ValueError, match="bad.txt, line 3: not UTF-8"): read_conll(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt: no such file"): read_conll(tmp_path / "nope.txt")


def test_label_list_file(tmp_path):
    (tmp_path / "l.txt").write_text("O\nB-GENE\nI-GENE\n")
    assert read_label_list(tmp_path / "l.txt") == ["O", "B-GENE", "I-GENE"]
    (tmp_path / "l.txt").write_text("\n")
    with pytest.raises(ValueError, match="l.txt, line 1: the label list is empty"): read_label_list(tmp_path / "l.txt")


# --- scores ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tags, entities", [
    (["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 3, 4)]),  # IOB2
    (["I-PER", "I-PER", "B-PER", "I-PER", "O", "I-ORG"], [("PER", 0, 1), ("PER", 2, 3), ("ORG", 5, 5)]),  # IOB1
    (["B-PER", "B-PER", "I-LOC", "B-LOC"], [("PER", 0, 0), ("PER", 1, 1), ("LOC", 2, 2), ("LOC", 3, 3)]),
    (["O", "I-MISC"], [("MISC", 1, 1)]),  # an entity may end the sentence
    (["B-ORG", "I-ORG", "E-ORG", "S-PER", "I-PER"], [("ORG", 0, 2), ("PER", 3, 3), ("PER", 4, 4)]),  # IOBES
    (["B-A-B", "I-A-B"], [("A-B", 0, 1)]),  # the type is everything after the first '-'
    (["B", "I", "O", "B"], [("_", 0, 1), ("_", 3, 3)]),  # tags without a type
    ([], []),
])
def test_get_entities_by_hand(tags, entities):
    assert get_entities(tags) == entities


def test_scores_by_hand():
    y_true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O", "B-PER"], ["O"]]
    y_pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "O", "B-PER"], ["B-LOC"]]
    # true: PER(0:0-1) LOC(0:3) ORG(1:0-1) PER(1:3) = 4;
    # predicted: PER(0:0-1) ORG(1:0) PER(1:3) LOC(2:0) = 4; right: 2 PER
    s = entity_scores(y_true, y_pred)
    assert (s["precision"], s["recall"], s["f1"], s["support"]) == (0.5, 0.5, 0.5, 4)
    assert s["types"]["PER"] == dict(precision=1., recall=1., f1=1., support=2)
    assert s["types"]["ORG"] == dict(precision=0., recall=0., f1=0., support=1)
    assert s["types"]["LOC"] == dict(precision=0., recall=0., f1=0., support=1)
    assert entity_scores([["O"]], [["O"]]) == dict(precision=0., recall=0., f1=0., support=0, types={})
    s = entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "B-PER"]])  # one extra prediction
    assert (s["precision"], s["recall"]) == (0.5, 1.) and abs(s["f1"] - 2 / 3) < 1e-12


def test_support_sentences_and_shape():
    "The notebook's example counts 3 true entities; no entity runs across sentences; shapes must match."
    s = entity_scores([["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]],
                      [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]])
    assert s["support"] == 3
    s = entity_scores([["B-PER", "I-PER"], ["I-PER", "O"]], [["B-PER", "I-PER"], ["I-PER", "O"]])  # IOB1
    assert (s["support"], s["f1"]) == (2, 1.)
    with pytest.raises(ValueError, match="differ in shape"): entity_scores([["O"]], [["O", "O"]])


def random_tags(rng, n, scheme):
    prefixes = {"IOB1": "IBO", "IOB2": "BIO", "IOBES": "BIESO"}[scheme]
    return [p if (p := rng.choice(prefixes)) == "O" else f"{p}-{rng.choice(['PER', 'LOC', 'ORG', 'MISC'])}"
            for _ in range(n)]


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2", "IOBES"])
def test_same_as_seqeval(scheme):
    "On random tag sequences (valid or not), the same entities and scores as seqeval 1.x's default mode."
    seqeval = pytest.importorskip("seqeval.metrics",
                                  reason="seqeval is not installed: the hand-computed cases stand in")
    from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities
    import warnings
    rng = random.Random(scheme)
    for _ in range(200):
        y_true = [random_tags(rng, rng.randint(1, 12), scheme) for _ in range(rng.randint(1, 5))]
        y_pred = [[t if rng.random() < 0.6 else random_tags(rng, 1, scheme)[0] for t in s] for s in y_true]
        for s in y_true: assert get_entities(s) == seqeval_entities(s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = [f(y_true, y_pred) for f in (seqeval.precision_score, seqeval.recall_score, seqeval.f1_score)]
        got = entity_scores(y_true, y_pred)
        assert [got["precision"], got["recall"], got["f1"]] == pytest.approx(want, abs=1e-12)


# --- features --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_seq_length", [6, 12, 128])
def test_labels_sit_on_first_pieces(tok, max_seq_length):
    exs = read_conll(NER_SAMPLE_DIR / "train.txt", CONLL2003_LABELS)
    f = ner_features(exs, tok, CONLL2003_LABELS, max_seq_length)
    words = [w for e in exs for w in e.words]
    labels = [CONLL2003_LABELS.index(t) for e in exs for t in e.labels]
    assert f.input_ids.shape[1] == max_seq_length and f.n_words == [len(e.words) for e in exs]
    assert ((f.label_ids != -100) == (f.word_ids >= 0)).all() and (f.attention_mask.sum(1) <= max_seq_length).all()
    assert sorted(f.word_ids[f.word_ids >= 0].tolist()) == list(range(len(words)))  # every word once, none lost
    for r in range(len(f.input_ids)):
        toks = tok.convert_ids_to_tokens(f.input_ids[r].tolist())
        n = int(f.attention_mask[r].sum())
        assert toks[0] == "[CLS]" and toks[n - 1] == "[SEP]" and all(t == "[PAD]" for t in toks[n:])
        for pos in (f.word_ids[r] >= 0).nonzero().flatten().tolist():
            k = int(f.word_ids[r, pos])
            assert toks[pos] == tok.tokenize(words[k])[0] and int(f.label_ids[r, pos]) == labels[k]
            nxt = pos + 1  # the word's other pieces follow, with no label
            while nxt < n - 1 and toks[nxt].startswith("##"):
                assert int(f.label_ids[r, nxt]) == -100
                nxt += 1
    if max_seq_length == 6: assert len(f.input_ids) > len(exs)  # long sentences were split


def test_word_predictions_and_loss(tok):
    exs = read_conll(NER_SAMPLE_DIR / "dev.txt", CONLL2003_LABELS)
    f = ner_features(exs, tok, CONLL2003_LABELS, 10)
    perfect = torch.nn.functional.one_hot(f.label_ids.clamp(min=0), 9).float() * 10
    assert word_predictions(perfect, f, CONLL2003_LABELS) == [e.labels for e in exs]
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=32), num_labels=9).eval()
    with torch.no_grad():
        logits = model(f.input_ids, f.token_type_ids, f.attention_mask)
        loss = model(f.input_ids, f.token_type_ids, f.attention_mask, f.label_ids)
    m = ner_metrics(exs, f, CONLL2003_LABELS)
    r = m(logits, None)
    assert abs(r["loss"] - loss.item()) < 1e-6  # the model's loss: first pieces only
    assert m.predictions == word_predictions(logits, f, CONLL2003_LABELS)
    assert r["f1"] == entity_scores([e.labels for e in exs], m.predictions)["f1"]


def test_unknown_tag_in_features_names_the_line(tok):
    e = NerExample("x.txt", [7, 8], ["Jim", "Henson"], ["B-PER", "I-PERSON"])
    with pytest.raises(ValueError, match="x.txt, line 8: tag 'I-PERSON'"): ner_features([e], tok, CONLL2003_LABELS)


# --- the command -----------------------------------------------------------------------------------------------

def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def test_run_ner_end_to_end(tiny_dir, tmp_path):
    "Train (the loss falls), evaluate, predict; the saved folder predicts the same again; predictions in CoNLL layout."
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(NER_SAMPLE_DIR, data)
    shutil.copy(data / "dev.txt", data / "test.txt")
    rc, stdout, err = run_cli("run_ner", "--data_dir", data, "--bert_model", tiny_dir, "--output_dir", out,
                              "--do_train", "--do_eval", "--do_predict", "--max_seq_length", 32,
                              "--train_batch_size", 8, "--learning_rate", "2e-3",
                              "--num_train_epochs", 12, "--logging_steps", 6, "--no_progress", "--no_plot", "--no_cuda")
    assert rc == 0, err
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 12 and losses[-1] < 0.25 * losses[0], losses
    ev = dict(l.split(" = ") for l in (out / "eval_results.txt").read_text().splitlines())
    assert {"eval_precision", "eval_recall", "eval_f1", "eval_loss", "global_step", "loss"} <= set(ev)
    assert ev["global_step"] == "72"
    te = dict(l.split(" = ") for l in (out / "test_results.txt").read_text().splitlines())
    assert te["test_f1"] == ev["eval_f1"] and "test_f1 = " in stdout  # test.txt is dev.txt
    pred = (out / "test_predictions.txt").read_text()
    dev = read_conll(data / "dev.txt")
    sents = [s.split("\n") for s in pred.rstrip("\n").split("\n\n")]
    assert [[l.split()[0] for l in s] for s in sents] == [e.words for e in dev]
    assert [[l.split()[1] for l in s] for s in sents] == [e.labels for e in dev]
    predicted = [[l.split()[2] for l in s] for s in sents]
    assert abs(entity_scores([e.labels for e in dev], predicted)["f1"] - float(te["test_f1"])) < 1e-12
    assert (out / "labels.txt").read_text().split() == CONLL2003_LABELS
    rc, _, err = run_cli("run_ner", "--data_dir", data, "--bert_model", out, "--output_dir", tmp_path / "again",
                         "--do_predict", "--max_seq_length", 32, "--no_progress", "--no_cuda")
    assert rc == 0, err
    assert (tmp_path / "again" / "test_predictions.txt").read_text() == pred


def test_custom_labels(tiny_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("BRCA1 B-GENE\nmutates O\n\np53 B-GENE\nbinds O\nDNA O\n")
    (tmp_path / "labels.txt").write_text("O\nB-GENE\nI-GENE\n")
    rc, _, err = run_cli("run_ner", "--data_dir", data, "--bert_model", tiny_dir, "--output_dir", tmp_path / "out",
                         "--do_train", "--labels", tmp_path / "labels.txt", "--max_seq_length", 16, "--max_steps", 2,
                         "--train_batch_size", 2, "--no_progress", "--no_plot", "--no_cuda")
    assert rc == 0, err
    assert (tmp_path / "out" / "labels.txt").read_text().split() == ["O", "B-GENE", "I-GENE"]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["hidden_size"] == 32


def test_bad_input_stops_before_writing(tiny_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(NER_SAMPLE_DIR, data)
    (data / "dev.txt").write_text("-DOCSTART- -X- -X- O\n\nJim NNP B-NP B-PER\nHenson NNP I-NP\n")
    rc, _, err = run_cli("run_ner", "--data_dir", data, "--bert_model", tiny_dir, "--output_dir", tmp_path / "out",
                         "--do_train", "--do_eval", "--no_cuda")
    assert rc == 1 and "dev.txt, line 4: 3 fields, but line 3 has 4" in err
    rc, _, err = run_cli("run_ner", "--data_dir", data, "--bert_model", tiny_dir, "--output_dir", tmp_path / "out",
                         "--do_predict", "--no_cuda")
    assert rc == 1 and "test.txt: no such file" in err
    # the tiny model has 64 positions
    rc, _, err = run_cli("run_ner", "--data_dir", NER_SAMPLE_DIR, "--bert_model", tiny_dir,
                         "--output_dir", tmp_path / "out", "--do_train", "--max_seq_length", 128, "--no_cuda")
    assert rc == 1 and "--max_seq_length 128 is longer than the model's max_position_embeddings=64" in err
    assert not (tmp_path / "out").exists()
