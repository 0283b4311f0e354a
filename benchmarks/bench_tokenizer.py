"""Tokenizer speed, peers side by side in one process, on the same English corpus.

    python benchmarks/bench_tokenizer.py [--repeats 3] [--max-bytes 5000000]

Runs, in turns (round-robin, so a noisy moment hits every peer alike), on the lines of
`corpus.english_corpus()` with the real bert-base-uncased vocabulary:
  - pytorch-pretrained-bert 0.6.2 `BertTokenizer.tokenize`, line by line (the seed);
  - bert_nb `BertTokenizer.tokenize`, line by line, a fresh tokenizer each turn (no warm memo);
  - transformers `BertTokenizerFast` on the whole batch;
  - raw `tokenizers` `encode_batch` (the same Rust pipeline, built from the model's tokenizer.json),
    with ids, type ids and attention mask read back, as a user needs them;
  - bert_nb `batch_encode(use_fast=True)`: the same model inputs.
Garbage collection is off while a peer is timed (as in timeit).
Prints tokens/s (median of the repeats) and the ratios the tokenizer issue asks for.
This is a benchmark, not a test: nothing here asserts a speed.
"""
import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import english_corpus  # noqa: E402


def peers(vocab, tokenizer_json):
    "name -> function(lines) returning the number of word pieces produced."
    from pytorch_pretrained_bert.tokenization import BertTokenizer as SeedTokenizer
    from tokenizers import Tokenizer
    from transformers import BertTokenizerFast
    from bert_nb import BertTokenizer

    seed = SeedTokenizer(vocab)
    raw = Tokenizer.from_file(tokenizer_json)
    raw.no_padding(); raw.no_truncation()
    hf = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    fast = BertTokenizer(vocab, use_fast=True)

    def raw_batch(lines):
        return sum(len(ids) for ids, _, _ in ((e.ids, e.type_ids, e.attention_mask) for e in raw.encode_batch(lines)))

    return {
        "pytorch-pretrained-bert 0.6.2 tokenize": lambda lines: sum(len(seed.tokenize(l)) for l in lines),
        "bert_nb tokenize (Python)": lambda lines: sum(len(t) for t in map(BertTokenizer(vocab).tokenize, lines)),
        "transformers BertTokenizerFast (batch)": lambda lines: sum(map(len, hf(lines)["input_ids"])),
        "tokenizers encode_batch (raw)": raw_batch,
        "bert_nb batch_encode (fast)": lambda lines: sum(map(len, fast.batch_encode(lines)["input_ids"])),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-bytes", type=int, default=5_000_000)
    args = ap.parse_args(argv)
    from bert_nb.hub import minilm_dir
    d = minilm_dir()
    lines = english_corpus(args.max_bytes)
    fns = peers(str(d / "vocab.txt"), str(d / "tokenizer.json"))
    times, counts = {k: [] for k in fns}, {}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            gc.collect(); gc.disable()  # as timeit does: no peer pays for another's garbage
            t = time.perf_counter(); counts[name] = fn(lines); times[name].append(time.perf_counter() - t)
            gc.enable()
    print(f"corpus: {len(lines)} lines, {sum(map(len, lines)) / 1e6:.2f} M characters; repeats: {args.repeats}")
    rate = {k: counts[k] / statistics.median(v) for k, v in times.items()}
    for k in fns:
        print(f"  {k:42s} {rate[k] / 1e3:8.0f} k tokens/s   ({counts[k]} tokens, median {statistics.median(times[k]):.2f} s)")
    py = rate["bert_nb tokenize (Python)"] / rate["pytorch-pretrained-bert 0.6.2 tokenize"]
    fast = rate["bert_nb batch_encode (fast)"] / rate["tokenizers encode_batch (raw)"]
    print(f"ratio bert_nb Python / pytorch-pretrained-bert: {py:.2f}x (target >= 2x)")
    print(f"ratio bert_nb fast / raw tokenizers encode_batch: {fast:.2f} (target >= 0.90)")
    return rate


if __name__ == "__main__":
    main()
