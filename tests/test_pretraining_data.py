"""`bert_nb create_pretraining_data`: the instances are Google's (compared with bert-tensorflow's own
create_pretraining_data.py), whole-word masking and the 80/10/10 rule hold, the .npy format round-trips and streams,
and bad input fails cleanly."""
import argparse, collections, contextlib, io, logging, os, random
from pathlib import Path

import numpy as np
import pytest
import torch

from bert_nb.hub import minilm_dir
from bert_nb.pretraining_data import (PretrainingDataset, add_create_pretraining_data_arguments,
                                      create_masked_lm_predictions, create_pretraining_data,
                                      create_pretraining_data_main, create_training_instances, python_docs_documents,
                                      read_documents, record_dtype, write_documents, write_instances)
from bert_nb.tokenization import BertTokenizer

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
    tf = pytest.importorskip("tensorflow",
                             reason="comparing with Google's create_pretraining_data.py needs the `tf` extra")
    pytest.importorskip("bert", reason="bert-tensorflow: pip install 'bert_nb[tf]'")
    from absl import flags
    from bert import create_pretraining_data as cpd, tokenization
    tokenization.tf = cpd.tf = tf.compat.v1  # bert-tensorflow 1.0.4 reads files with tf.gfile (TF 1 API)
    if not flags.FLAGS.is_parsed(): flags.FLAGS.mark_as_parsed()  # its --preserve_unused_tokens flag keeps its default
    return cpd, {low: tokenization.FullTokenizer(str(vocab_path), do_lower_case=low) for low in (True, False)}


# name: (seed, dupe_factor, short_seq_prob, max_seq_length, max_predictions_per_seq, masked_lm_prob, do_lower_case)
SETTINGS = {
    "google-defaults": (12345, 2, 0.1, 128, 20, 0.15, True),
    "short-0.5-len64": (1, 3, 0.5, 64, 10, 0.2, True),
    "no-short-len32": (7, 2, 0.0, 32, 5, 0.15, True),
    "all-short-len16": (3, 2, 1.0, 16, 3, 0.3, True),
    "cased-len48": (99, 1, 0.1, 48, 8, 0.15, False),
}
COMPARED = collections.Counter()


@pytest.mark.parametrize("name", SETTINGS)
def test_instances_identical_to_googles(google, tok, vocab_path, text_file, name):
    """Same text, vocabulary and seed: every field of every instance equals what bert-tensorflow's
    create_training_instances makes."""
    cpd, g_toks = google
    seed, dupe, short, L, P, prob, low = SETTINGS[name]
    if low: ours_tok = tok
    else:  # cased tokenization of an uncased vocabulary: odd, but it must still match Google's
        with pytest.warns(UserWarning, match="this vocabulary is uncased but do_lower_case=False"):
            ours_tok = BertTokenizer(vocab_path, do_lower_case=False, never_split=())
    theirs = cpd.create_training_instances([text_file], g_toks[low], L, dupe, short, prob, P, random.Random(seed))
    ours = create_training_instances(read_documents([text_file], ours_tok), list(ours_tok.vocab), L, dupe, short, prob,
                                     P, random.Random(seed))
    assert len(ours) == len(theirs) >= 300
    assert as_rows(ours) == as_rows(theirs)
    assert any(i.is_random_next for i in ours) and any(not i.is_random_next for i in ours)
    COMPARED[name] = len(ours)
    print(f"{name}: {len(ours)} instances identical to Google's")


def test_whole_word_mask_agrees_where_google_has_no_such_flag(google, tok, docs, tmp_path):
    """bert-tensorflow 1.0.4 predates --do_whole_word_mask. On text whose words are single pieces every word is one
    candidate, so whole-word masking must draw exactly what Google's piece-by-piece masking draws."""
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
    insts = create_training_instances(documents, vocab_words, 64, 2, 0.1, 0.15, 10, random.Random(0),
                                      do_whole_word_mask=True)
    plain = create_training_instances(documents, vocab_words, 64, 2, 0.1, 0.15, 10, random.Random(0))
    multi = 0
    for inst in insts:
        orig = list(inst.tokens)
        for p, label in zip(inst.masked_lm_positions, inst.masked_lm_labels): orig[p] = label
        pos = set(inst.masked_lm_positions)
        # a ## piece belongs to the candidate before it
        # (Google's grouping: even across a [SEP], after truncation from the front)
        cands = [i for i, t in enumerate(orig) if t not in ("[CLS]", "[SEP]")]
        for prev, p in zip(cands, cands[1:]):
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
    assert abs(kinds["mask"] / n - 0.8) < 0.02 and abs(kinds["keep"] / n - 0.1) < 0.015
    assert abs(kinds["random"] / n - 0.1) < 0.015
    # max_predictions_per_seq
    assert len(create_masked_lm_predictions(toks, 0.15, 4, vocab_words, random.Random(0))[1]) == 4
    assert len(create_masked_lm_predictions(toks[:3], 0.15, 4, vocab_words, random.Random(0))[1]) == 1  # at least one



def test_masking_budget_order_and_specials(tok):
    "The notebook's sentence: budget, ascending positions, exact count piece by piece, the cap, no [CLS]/[SEP]."
    vocab_words = list(tok.vocab)
    toks = ["[CLS]"] + tok.tokenize("the unaffable puppeteer was unbelievably embarrassed") + ["[SEP]"]
    _, pos, labels = create_masked_lm_predictions(toks, 0.4, 20, vocab_words, random.Random(3), do_whole_word_mask=True)
    assert 1 <= len(pos) <= round(len(toks) * 0.4)
    assert pos == sorted(pos)
    piece_by_piece = create_masked_lm_predictions(toks, 0.4, 20, vocab_words, random.Random(3))
    assert len(piece_by_piece[1]) == round(len(toks) * 0.4)  # piece by piece: exactly
    assert len(create_masked_lm_predictions(toks, 0.4, 2, vocab_words, random.Random(3))[1]) == 2
    assert "[CLS]" not in labels and "[SEP]" not in labels


def test_written_file_is_memory_mapped_and_complete(tok, docs, tmp_path):
    "Every instance is written; the file is mapped, not read; padding is 0 (ids, types) and -1 (labels); no temp file."
    documents = [[tok.tokenize(s) for s in d] for d in docs[:20]]
    instances = create_training_instances(documents, list(tok.vocab), 64, 1, 0.1, 0.15, 20, random.Random(0))
    n = write_instances(instances, tok, 64, 20, tmp_path / "train.npy")
    ds = PretrainingDataset(tmp_path / "train.npy")
    assert n == len(instances) == len(ds)
    assert isinstance(ds.arrays[0], np.memmap)  # mapped, not read
    for k in (0, 5, len(ds) - 1):
        inst, (ids, types, mask, mpos, mids, nsp) = instances[k], ds[k]
        L, m = len(inst.tokens), len(inst.masked_lm_positions)
        assert ids[L:].sum().item() == 0
        assert types[:L].tolist() == inst.segment_ids
        assert mask.tolist() == [1] * L + [0] * (64 - L)
        assert types[L:].sum().item() == 0
        assert mpos[:m].tolist() == inst.masked_lm_positions
        assert mids[m:].tolist() == [-1] * (20 - m)
    assert len(PretrainingDataset(tmp_path / "train.npy", tmp_path / "train.npy")) == 2 * len(ds)
    assert sorted(p.name for p in tmp_path.glob(".train.npy*")) == []  # no temporary file left

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
    insts = create_training_instances(read_documents([text_file], tok), list(tok.vocab), 64, 1, 0.1, 0.15, 10,
                                      random.Random(4))
    ds = PretrainingDataset(tmp_path / "a.npy")
    assert stats["instances"] == len(ds) == len(insts)
    assert isinstance(ds.arrays[0], np.memmap) and ds.arrays[0].dtype == record_dtype(64, 10, 30522)
    assert ds.arrays[0].dtype["input_ids"].base == np.uint16
    assert record_dtype(64, 10, 70000)["input_ids"].base == np.int32
    header = os.path.getsize(tmp_path / "a.npy") - len(ds) * ds.arrays[0].dtype.itemsize
    assert 0 < header <= 4096  # fixed-size records after a small .npy header
    for k, inst in enumerate(insts):
        ids, types, mask, pos, mids, nsp = ds[k]
        n, m = len(inst.tokens), len(inst.masked_lm_positions)
        assert tok.convert_ids_to_tokens(ids[:n].tolist()) == inst.tokens and not ids[n:].any()
        assert types[:n].tolist() == inst.segment_ids and not types[n:].any()
        assert mask.tolist() == [1] * n + [0] * (64 - n)
        assert pos[:m].tolist() == inst.masked_lm_positions and not pos[m:].any()
        assert tok.convert_ids_to_tokens(mids[:m].tolist()) == inst.masked_lm_labels
        assert mids[m:].tolist() == [-1] * (10 - m)
        assert nsp.item() == inst.is_random_next
    assert ds[-1][0].tolist() == ds[len(ds) - 1][0].tolist()
    with pytest.raises(IndexError): ds[len(ds)]
    # several files are one dataset; a DataLoader reads it in shuffled batches
    both = PretrainingDataset(tmp_path / "a.npy", tmp_path / "a.npy")
    assert len(both) == 2 * len(ds) and torch.equal(both[len(ds) + 7][4], ds[7][4])
    seen = 0
    for batch in torch.utils.data.DataLoader(both, batch_size=32, shuffle=True, num_workers=2):
        b = len(batch[0])
        assert [tuple(t.shape) for t in batch] == [(b, 64)] * 3 + [(b, 10)] * 2 + [(b,)]
        seen += len(batch[0])
    assert seen == len(both)
    # other shapes do not mix; a file of something else is refused
    write_instances(insts[:5], tok, 80, 10, tmp_path / "b.npy")
    with pytest.raises(ValueError,
                       match="differ in max_seq_length or max_predictions_per_seq: \\(80, 10\\) vs \\(64, 10\\)"):
        PretrainingDataset(tmp_path / "a.npy", tmp_path / "b.npy")
    np.save(tmp_path / "c.npy", np.arange(3))
    with pytest.raises(ValueError, match="not a file of `bert_nb create_pretraining_data`"):
        PretrainingDataset(tmp_path / "c.npy")
    with pytest.raises(FileNotFoundError, match="no such file"): PretrainingDataset(tmp_path / "none.npy")


# ---- bad input ----
def cpd_cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        args = add_create_pretraining_data_arguments(argparse.ArgumentParser()).parse_args([str(a) for a in argv])
        rc = create_pretraining_data_main(args)
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
        rc, err = cpd_cli("--input_file", f"{text_file},{tmp_path / f}", "--output_file", out,
                          "--vocab_file", vocab_path)
        assert rc == 1 and f"{f}: the file holds no text" in err
    (tmp_path / "bad.txt").write_bytes(b"good line\nanother\n\xff\xfe bad\n")
    rc, err = cpd_cli("--input_file", tmp_path / "bad.txt", "--output_file", out, "--vocab_file", vocab_path)
    assert rc == 1 and "bad.txt, line 3: not UTF-8 text" in err
    rc, err = cpd_cli("--input_file", tmp_path / "nope*.txt", "--output_file", out, "--vocab_file", vocab_path)
    assert rc == 1 and "nope*.txt: no file matches" in err
    rc, err = cpd_cli("--input_file", text_file, "--output_file", tmp_path / "no" / "dir.npy",
                      "--vocab_file", vocab_path)
    assert rc == 1 and "no such directory" in err
    rc, err = cpd_cli("--input_file", text_file, "--output_file", out, "--vocab_file", vocab_path,
                      "--max_seq_length", "4")
    assert rc == 1 and "max_seq_length=4: at least 5 are needed" in err
    # nothing written, no temp file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "blank.txt", "empty.txt", "v.txt"]


def test_long_line_is_cut_and_reported(vocab_path, tmp_path, caplog):
    (tmp_path / "long.txt").write_text("A short first line.\n" + "many words " * 40 +
                                       "\nEnd.\n\nOther document.\nAnd more.\n")
    with caplog.at_level(logging.WARNING, logger="bert_nb.pretraining_data"):
        s = create_pretraining_data(tmp_path / "long.txt", tmp_path / "long.npy", vocab_path, max_seq_length=32,
                                    dupe_factor=3)
    assert s["long_lines"] == 1
    assert "1 line(s) have more word pieces than fit in max_seq_length=32 (the longest: 80)" in caplog.text
    assert s["instances"] > 0 and PretrainingDataset(tmp_path / "long.npy").field("length").max() <= 32


def test_failed_write_keeps_the_old_file(tok, text_file, tmp_path, monkeypatch):
    out = tmp_path / "data.npy"
    create_pretraining_data(text_file, out, minilm_dir() / "vocab.txt", max_seq_length=32, dupe_factor=1)
    before = out.read_bytes()
    def broken(f, arr):
        f.write(b"\x93NUMPY half")
        raise OSError("disk full")
    monkeypatch.setattr(np, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        create_pretraining_data(text_file, out, minilm_dir() / "vocab.txt", max_seq_length=32, dupe_factor=2)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["data.npy", "data.vocab.txt"]
