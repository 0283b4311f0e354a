"""`bert_nb train_vocab`: a WordPiece vocabulary learned from the pre-training text is a BERT vocab.txt."""
import argparse, contextlib, io
from pathlib import Path

import pytest

from bert_nb.hub import minilm_dir
from bert_nb.pretraining_data import python_docs_documents, write_documents
from bert_nb.tokenization import BertTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_documents(python_docs_documents(150_000), tmp_path_factory.mktemp("text") / "docs.txt")


def test_train_vocab_is_a_bert_vocab(text_file, tmp_path):
    """train_wordpiece_vocab writes a vocab.txt that BertTokenizer and tokenizers' own BERT tokenizer read and cut
    alike; the command writes the same file; bad input is named and leaves no file."""
    from tokenizers import BertWordPieceTokenizer
    from bert_nb.vocab import SPECIAL_PIECES, add_train_vocab_arguments, train_vocab_main, train_wordpiece_vocab
    n = train_wordpiece_vocab(text_file, tmp_path / "v" / "vocab.txt", vocab_size=1500)
    lines = [l for l in Path(text_file).read_text().splitlines() if l]
    ours = BertTokenizer(tmp_path / "v" / "vocab.txt")
    rust = BertWordPieceTokenizer(str(tmp_path / "v" / "vocab.txt"), lowercase=True)
    assert len(ours.vocab) == n and 1000 < n <= 1500 and list(ours.vocab)[:5] == SPECIAL_PIECES
    assert all(ours.tokenize(l) == rust.encode(l, add_special_tokens=False).tokens for l in lines)
    bert_base = BertTokenizer(minilm_dir() / "vocab.txt")
    assert sum(map(len, map(ours.tokenize, lines))) < 1.3 * sum(map(len, map(bert_base.tokenize, lines)))
    cased = train_wordpiece_vocab(text_file, tmp_path / "cased.txt", vocab_size=1500, do_lower_case=False)
    assert cased > 0 and any(t[:1].isupper() for t in (tmp_path / "cased.txt").read_text().split())
    p = add_train_vocab_arguments(argparse.ArgumentParser())
    assert train_vocab_main(p.parse_args(["--input_file", str(text_file), "--vocab_file", str(tmp_path / "cli.txt"),
                                          "--vocab_size", "1500"])) == 0
    assert (tmp_path / "cli.txt").read_bytes() == (tmp_path / "v" / "vocab.txt").read_bytes()
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "bad.txt").write_bytes(b"ok\nnot \xff utf-8\n")
    for src, size, msg in (("blank.txt", 100, "no text to learn a vocabulary from"),
                           ("bad.txt", 100, "bad.txt, line 2: not UTF-8"),
                           ("missing.txt", 100, "missing.txt: no such file"), ("blank.txt", 3, "vocab_size=3")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert train_vocab_main(p.parse_args(["--input_file", str(tmp_path / src),
                                                  "--vocab_file", str(tmp_path / "out.txt"),
                                                  "--vocab_size", str(size)])) == 1
        assert msg in err.getvalue(), (msg, err.getvalue())
    assert not (tmp_path / "out.txt").exists()


def test_size_reproducibility_and_errors_as_the_notebook_shows(tmp_path):
    "200 kB of text, 2,000 pieces: the size is the file's, twice the same; bad input is named, nothing written."
    from bert_nb.vocab import train_wordpiece_vocab
    txt = write_documents(python_docs_documents(200_000), tmp_path / "docs.txt")
    n = train_wordpiece_vocab(txt, tmp_path / "own" / "vocab.txt", vocab_size=2000)
    assert n == len(BertTokenizer(tmp_path / "own" / "vocab.txt").vocab)
    assert 1000 < n <= 2000
    assert train_wordpiece_vocab(txt, tmp_path / "own" / "again.txt", vocab_size=2000) == n
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "latin1.txt").write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    for bad, size, msg in ((tmp_path / "blank.txt", 100, "no text to learn a vocabulary from"),
                           (txt, 5, "vocab_size=5: a vocabulary needs more"),
                           (tmp_path / "latin1.txt", 100, "latin1.txt, line 2: not UTF-8 text"),
                           (tmp_path / "nowhere.txt", 100, "nowhere.txt: no such file")):
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            train_wordpiece_vocab(bad, tmp_path / "own" / "bad.txt", vocab_size=size)
        assert msg in str(e.value)
    assert not (tmp_path / "own" / "bad.txt").exists()  # nothing written
