"""Tokenizer proofs with the real bert-base-uncased vocabulary: the Python path, the fast (Rust)
path, pytorch-pretrained-bert 0.6.2 and Google's own tokenization.py agree; bad input fails clearly."""
import unicodedata
import warnings

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bert_nb import BertTokenizer
from bert_nb.tokenization import _fast_safe_char


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def trio(request, vocab_path):
    "(Python path, fast path, the seed) with one casing."
    from pytorch_pretrained_bert.tokenization import BertTokenizer as Seed
    low = request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the casing warning: deliberate for the cased run
        return BertTokenizer(vocab_path, do_lower_case=low), BertTokenizer(vocab_path, do_lower_case=low, use_fast=True), Seed(str(vocab_path), do_lower_case=low)


def test_corpus_identical(trio, corpus):
    "Every line of the English corpus: same tokens and ids on all three, same offsets on both paths."
    py, fast, seed = trio
    enc_py = py.batch_encode(corpus, add_special_tokens=False, return_offsets=True)
    enc_fast = fast.batch_encode(corpus, add_special_tokens=False, return_offsets=True)
    diff_ids = [i for i, (a, b) in enumerate(zip(enc_py["input_ids"], enc_fast["input_ids"])) if a != b]
    diff_offs = [i for i, (a, b) in enumerate(zip(enc_py["offsets"], enc_fast["offsets"])) if a != b]
    diff_seed = [i for i, line in enumerate(corpus) if py.convert_ids_to_tokens(enc_py["input_ids"][i]) != seed.tokenize(line)]
    n_tokens = sum(map(len, enc_py["input_ids"]))
    print(f"{len(corpus)} lines, {n_tokens} tokens: {len(diff_ids)} id, {len(diff_offs)} offset, {len(diff_seed)} seed differences")
    assert n_tokens > 500_000
    assert diff_ids == [] and diff_offs == [] and diff_seed == []
    assert sum(fast._fast.ok(l) for l in corpus) > 0.99 * len(corpus), "English should stay on the fast path"


TRICKY = ["[CLS]", "[SEP]", "[mask]", "Σ", "ΟΔΟΣ", "İ", "e\u0301", "\u0300", "北京", "\ud800", "\x00", "\ufffd", "\u2028",
          "\x1c", "\u00a0", "ﬁ", "Å", "\u1fef", "'s", "##", "...", "\u3000", "\U0002b820", "\u0890"]
texts = st.lists(st.one_of(st.characters(codec=None), st.sampled_from(TRICKY), st.text(max_size=8)), max_size=30).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts)
def test_unicode_identical(trio, text):
    "Any Unicode string: nothing crashes, the three agree on tokens, the two paths on ids and offsets."
    py, fast, seed = trio
    toks, offs = py.tokenize_with_offsets(text)
    assert toks == py.tokenize(text) == seed.tokenize(text)
    assert fast.tokenize_with_offsets(text) == (toks, offs)
    assert all(0 <= a <= b <= len(text) for a, b in offs)


def test_every_safe_character_agrees(vocab_path):
    "Each character the fast path accepts, in context, gives what the Python path gives (both casings)."
    safe = [chr(cp) for cp in range(0x110000) if _fast_safe_char(chr(cp))]
    assert len(safe) > 200_000
    texts = [f"a{c}b X{c}{c} {c}." for c in safe]
    for low in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = BertTokenizer(vocab_path, do_lower_case=low, use_fast=True)
        rust = [e.ids for e in tok._fast.rust.encode_batch(texts, add_special_tokens=False)]
        bad = [(safe[i], t) for i, t in enumerate(texts) if tok._py_pieces(t)[0] != rust[i]]
        assert bad == [], f"do_lower_case={low}: {len(bad)} characters differ, e.g. {[hex(ord(c)) for c, _ in bad[:10]]}"


def test_unsafe_characters_really_differ(vocab_path):
    "The guard is needed: without it, Rust disagrees with Python on the characters it excludes."
    tok = BertTokenizer(vocab_path, use_fast=True)
    for text in ["ΟΔΟΣ", "\u0890x", "a [CLS] b", "x [MASK] y"]:
        rust = tok._fast.rust.encode(text, add_special_tokens=False).ids
        assert rust != tok._py_pieces(text)[0] and not tok._fast.ok(text)
        assert tok.tokenize(text) == BertTokenizer(vocab_path).tokenize(text)


def test_google_tokenization_agrees(vocab_path, corpus):
    "Google's own FullTokenizer (bert-tensorflow) gives the same tokens, apart from never_split."
    tf = pytest.importorskip("tensorflow", reason="the `tf` extra (make test installs it)")
    from bert import tokenization as google
    google.tf = tf.compat.v1  # bert-tensorflow 1.0.4 reads the vocabulary with tf.gfile (TF 1 API)
    from absl import flags
    if not flags.FLAGS.is_parsed(): flags.FLAGS.mark_as_parsed()  # its --preserve_unused_tokens flag (default False)
    g = google.FullTokenizer(str(vocab_path), do_lower_case=True)
    ours, plain = BertTokenizer(vocab_path), BertTokenizer(vocab_path, never_split=())
    lines = corpus[:20000]
    assert all(g.tokenize(l) == plain.tokenize(l) for l in lines)
    differ = [l for l in lines if g.tokenize(l) != ours.tokenize(l)]
    assert all(any(t in l for t in ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")) for l in differ)
    assert g.tokenize("x [CLS] y") == ["x", "[", "cl", "##s", "]", "y"] and ours.tokenize("x [CLS] y") == ["x", "[CLS]", "y"]


def test_bad_inputs(vocab_path, tmp_path):
    tok = BertTokenizer(vocab_path)
    for bad in (None, b"bytes", 3, ["a list"]):
        with pytest.raises(TypeError, match="must be a str"):
            tok.tokenize(bad)
    with pytest.raises(TypeError, match="texts must be a list of str, got str"):
        tok.batch_encode("one string")
    with pytest.raises(ValueError, match="truncation='sideways'"):
        tok("a", truncation="sideways")
    with pytest.raises(KeyError, match="'\\[BOS\\]' is not in the vocabulary"):
        tok.convert_tokens_to_ids(["[BOS]"])
    (tmp_path / "v.txt").write_text("[UNK]\nhello\n", encoding="utf-8")
    with pytest.raises(KeyError, match="\\[PAD\\] is not in the vocabulary"):
        BertTokenizer(tmp_path / "v.txt")(["hello", "hello hello"], padding=True, add_special_tokens=False)
    with pytest.raises(FileNotFoundError, match="vocabulary file not found"):
        BertTokenizer(tmp_path / "missing.txt")


def test_from_pretrained_offline_fails_clearly(tmp_path, monkeypatch):
    "A shortcut name with no network and no cache is an error naming the URL, never None."
    monkeypatch.setenv("BERT_NB_OFFLINE", "1")
    with pytest.raises(OSError, match="bert-base-cased/resolve/main/vocab.txt"):
        BertTokenizer.from_pretrained("bert-base-cased", cache_dir=tmp_path)


def test_casing_warnings(vocab_path, tmp_path):
    "A cased vocabulary with lower-casing on warns; so does an uncased one with it off; matching ones don't."
    words = [l.rstrip("\n") for l in open(vocab_path, encoding="utf-8")]
    cased = tmp_path / "cased.txt"
    cased.write_text("".join(w + "\n" for w in words + [w.capitalize() for w in words[2000:3000] if w.isalpha() and w.capitalize() not in words]), encoding="utf-8")
    with pytest.warns(UserWarning, match="vocabulary is cased .* but do_lower_case=True"):
        BertTokenizer(cased, do_lower_case=True)
    with pytest.warns(UserWarning, match="vocabulary is uncased but do_lower_case=False"):
        BertTokenizer(vocab_path, do_lower_case=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BertTokenizer(vocab_path, do_lower_case=True); BertTokenizer(cased, do_lower_case=False)


def test_long_sequence_warns_as_the_seed(vocab_path, caplog):
    tok = BertTokenizer(vocab_path, max_len=8)
    tok.convert_tokens_to_ids(tok.tokenize("one two three four five six seven eight nine"))
    assert "Token indices sequence length is longer than the specified maximum sequence length for this BERT model (9 > 8)" in caplog.text
    assert len(tok("one two three four five six seven eight nine", truncation=True)["input_ids"]) == 8


@pytest.mark.parametrize("low", [True, False], ids=["uncased", "cased"])
def test_basic_tokenizer_equals_seed_on_every_bmp_character(low):
    "BasicTokenizer against the seed's on each of the 65,536 BMP code points in four contexts."
    from pytorch_pretrained_bert.tokenization import BasicTokenizer as Seed
    from bert_nb import BasicTokenizer
    ours, seed = BasicTokenizer(low), Seed(low)
    bad = [cp for cp in range(0x10000) for t in (chr(cp), f"a{chr(cp)}b", f"X{chr(cp)}{chr(cp)} [CLS]{chr(cp)}", f"{chr(cp)}Σ")
           if ours.tokenize(t) != seed.tokenize(t)]
    assert bad == [], [hex(cp) for cp in bad[:20]]


# --- Moved from nbs/00_tokenizer.ipynb: the notebook shows one example per idea, these are the rest ----------------

PUPPETEER = ['[CLS]', 'who', 'was', 'jim', 'henson', '?', '[SEP]', 'jim', 'henson', 'was', 'a', 'puppet', '##eer', '[SEP]']


def test_ids_round_trip_and_errors(vocab_path):
    "Ids back to tokens; an id outside the vocabulary names the range; WordPiece alone on pre-split text."
    tok = BertTokenizer(vocab_path)
    ids = tok.convert_tokens_to_ids(PUPPETEER)
    assert tok.convert_ids_to_tokens(ids) == PUPPETEER
    with pytest.raises(Exception) as e:
        tok.convert_ids_to_tokens([5, 30522])
    assert "id 30522 is not in the vocabulary: ids run from 0 to 30521" in str(e.value)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        BertTokenizer(vocab_path, do_lower_case=False)
    assert len(w) == 1 and "vocabulary is uncased but do_lower_case=False" in str(w[0].message)
    # WordPiece only: "," continues "henson"
    assert BertTokenizer(vocab_path, do_basic_tokenize=False).tokenize("jim henson,") == ["jim", "henson", "##,"]


def test_encode_options(vocab_path):
    "A pair, a truncated and padded batch with offsets and masks, tensors, and truncation of one side only."
    tok = BertTokenizer(vocab_path)
    enc = tok("Who was Jim Henson?", "Jim Henson was a puppeteer", return_tokens=True)
    assert enc["tokens"] == PUPPETEER
    assert enc["attention_mask"] == [1] * 14
    enc = tok(["a puppeteer", "Jim Henson was a puppeteer"], ["who?", "who was he?"], max_length=8, truncation=True,
              padding="max_length", return_offsets=True, return_tokens=True, return_special_tokens_mask=True)
    assert enc["tokens"][0] == ['[CLS]', 'a', 'puppet', '##eer', '[SEP]', 'who', '?', '[SEP]']
    assert enc["special_tokens_mask"][0] == [1, 0, 0, 0, 1, 0, 0, 1]
    enc = tok(["a puppeteer", "Jim"], padding=True, return_tensors="pt")
    assert enc["input_ids"].shape == (2, 5)
    assert enc["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0]
    assert tok("Jim Henson", return_tensors="pt")["input_ids"].shape == (1, 4)   # one text: a batch of one
    q = tok("who was he?", "Jim Henson was a puppeteer " * 20, max_length=16, truncation="only_second")
    assert sum(1 for t in q["token_type_ids"] if t == 0) == 6     # the question stays whole


@pytest.mark.parametrize("call,message", [
    (lambda tok: tok(["a"], ["b", "c"]), "1 texts but 2 text_pairs"),
    (lambda tok: tok("a", padding="max_length"), "padding='max_length' needs max_length"),
    (lambda tok: tok(["a", "b c"], return_tensors="pt"), "pass padding=True"),
    (lambda tok: tok(["a", 3]), "text 1 must be a str, got int"),
], ids=["pairs", "max_length", "ragged-tensors", "not-a-str"])
def test_encode_errors(vocab_path, call, message):
    with pytest.raises(Exception) as e:
        call(BertTokenizer(vocab_path))
    assert message in str(e.value)
