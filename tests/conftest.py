"""Shared fixtures: the real bert-base-uncased vocabulary and the English corpus."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="session")
def vocab_path():
    from bert_nb.hub import minilm_dir
    return minilm_dir() / "vocab.txt"


@pytest.fixture(scope="session")
def corpus():
    from corpus import english_corpus
    lines = english_corpus()
    assert sum(map(len, lines)) > 2_000_000, "the corpus should hold megabytes of English"
    return lines


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread; on a shared two-core machine two threads can be several times
    slower, and fight other processes for the cores. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, vocab_path):
    "A random 2-layer BERT (hidden 32) over the real bert-base-uncased vocabulary, as a folder any `--bert_model` reads."
    from bert_nb.heads import BertForPreTraining, save_tiny_bert
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), vocab_path, BertForPreTraining, max_position_embeddings=128)
