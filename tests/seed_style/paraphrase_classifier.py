"""A fine-tuning script written the way pytorch-pretrained-bert 0.6.2's users wrote theirs: its module imports, its
flags, BertAdam with the warmup-linear schedule, a hand-written training loop, the by-hand save (state dict, config,
vocabulary) and a reload by folder before evaluating. It reads a paraphrase set in MRPC's layout.

The test runs it twice: as it is (on bert_nb), and with `bert_nb` renamed to `pytorch_pretrained_bert`; the two runs
must agree. It prints one JSON line with what it measured.
"""
import argparse
import csv
import json
import logging
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

from bert_nb.file_utils import PYTORCH_PRETRAINED_BERT_CACHE, WEIGHTS_NAME, CONFIG_NAME
from bert_nb.modeling import BertForSequenceClassification, BertConfig
from bert_nb.tokenization import BertTokenizer
from bert_nb.optimization import BertAdam, WarmupLinearSchedule

logger = logging.getLogger(__name__)


def read_pairs(path, limit):
    "(sentence 1, sentence 2, label) from an MRPC-layout TSV: Quality, #1 ID, #2 ID, #1 String, #2 String."
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar=None))[1:]
    return [(r[3], r[4], int(r[0])) for r in rows][:limit]


def to_features(pairs, tokenizer, max_seq_length):
    "[CLS] a [SEP] b [SEP], segment ids, input mask, padded with zeros; the longer side is cut first."
    ids, segments, masks, labels = [], [], [], []
    for a, b, label in pairs:
        ta, tb = tokenizer.tokenize(a), tokenizer.tokenize(b)
        while len(ta) + len(tb) > max_seq_length - 3:
            (ta if len(ta) > len(tb) else tb).pop()
        tokens = ["[CLS]"] + ta + ["[SEP]"] + tb + ["[SEP]"]
        seg = [0] * (len(ta) + 2) + [1] * (len(tb) + 1)
        row = tokenizer.convert_tokens_to_ids(tokens)
        pad = [0] * (max_seq_length - len(row))
        ids.append(row + pad); segments.append(seg + pad); masks.append([1] * len(row) + pad); labels.append(label)
    return TensorDataset(*(torch.tensor(x, dtype=torch.long) for x in (ids, segments, masks, labels)))


def evaluate(model, data, batch_size):
    "Predicted labels, logits and mean loss of `model` on `data`."
    model.eval()
    preds, all_logits, loss, n = [], [], 0.0, 0
    for input_ids, segment_ids, input_mask, label_ids in DataLoader(data, sampler=SequentialSampler(data),
                                                                     batch_size=batch_size):
        with torch.no_grad():
            logits = model(input_ids, segment_ids, input_mask, labels=None)
            loss += torch.nn.functional.cross_entropy(logits.float(), label_ids, reduction="sum").item()
        n += len(label_ids)
        all_logits.append(logits.float())
        preds.extend(logits.argmax(-1).tolist())
    return preds, torch.cat(all_logits), loss / n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--bert_model", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--do_train", action="store_true")
    parser.add_argument("--do_eval", action="store_true")
    parser.add_argument("--do_lower_case", action="store_true")
    parser.add_argument("--max_seq_length", default=64, type=int)
    parser.add_argument("--train_batch_size", default=16, type=int)
    parser.add_argument("--eval_batch_size", default=32, type=int)
    parser.add_argument("--learning_rate", default=5e-5, type=float)
    parser.add_argument("--num_train_epochs", default=1.0, type=float)
    parser.add_argument("--warmup_proportion", default=0.1, type=float)
    parser.add_argument("--max_examples", default=None, type=int, help="use the first N pairs of each file")
    parser.add_argument("--seed", default=42, type=int)
    args = parser.parse_args()

    random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    cache_dir = os.path.join(str(PYTORCH_PRETRAINED_BERT_CACHE), "distributed_-1")
    tokenizer = BertTokenizer.from_pretrained(args.bert_model, do_lower_case=args.do_lower_case)
    model = BertForSequenceClassification.from_pretrained(args.bert_model, cache_dir=cache_dir, num_labels=2)
    result = {}

    if args.do_train:
        train = to_features(read_pairs(os.path.join(args.data_dir, "train.tsv"), args.max_examples), tokenizer,
                            args.max_seq_length)
        t_total = int(len(train) / args.train_batch_size * args.num_train_epochs)
        no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
        param_optimizer = list(model.named_parameters())
        groups = [{"params": [p for n, p in param_optimizer if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
                  {"params": [p for n, p in param_optimizer if any(nd in n for nd in no_decay)], "weight_decay": 0.0}]
        optimizer = BertAdam(groups, lr=args.learning_rate, warmup=args.warmup_proportion, t_total=t_total)
        warmup_linear = WarmupLinearSchedule(warmup=args.warmup_proportion, t_total=t_total)
        model.train()
        losses, lrs, global_step, started = [], [], 0, time.perf_counter()
        for _ in range(int(args.num_train_epochs)):
            for input_ids, segment_ids, input_mask, label_ids in DataLoader(train, sampler=RandomSampler(train),
                                                                             batch_size=args.train_batch_size):
                loss = model(input_ids, segment_ids, input_mask, label_ids)
                loss.backward()
                lrs.append(args.learning_rate * warmup_linear.get_lr(global_step, args.warmup_proportion))
                optimizer.step()
                optimizer.zero_grad()
                global_step += 1
                losses.append(loss.item())
        result.update(losses=losses, lrs=lrs, global_step=global_step, train_seconds=time.perf_counter() - started)

        # Save a trained model, its configuration and the vocabulary, then load them back by folder
        model_to_save = model.module if hasattr(model, "module") else model
        torch.save(model_to_save.state_dict(), os.path.join(args.output_dir, WEIGHTS_NAME))
        model_to_save.config.to_json_file(os.path.join(args.output_dir, CONFIG_NAME))
        tokenizer.save_vocabulary(args.output_dir)
        in_memory = model
        model = BertForSequenceClassification.from_pretrained(args.output_dir, num_labels=2)
        tokenizer = BertTokenizer.from_pretrained(args.output_dir, do_lower_case=args.do_lower_case)
        result["saved"] = sorted(os.listdir(args.output_dir))
        result["config"] = json.loads(BertConfig.from_json_file(os.path.join(args.output_dir, CONFIG_NAME)).to_json_string())

    if args.do_eval:
        dev_pairs = read_pairs(os.path.join(args.data_dir, "dev.tsv"), args.max_examples)
        dev = to_features(dev_pairs, tokenizer, args.max_seq_length)
        started = time.perf_counter()
        preds, logits, eval_loss = evaluate(model, dev, args.eval_batch_size)
        result["eval_seconds"] = time.perf_counter() - started
        labels = [label for _, _, label in dev_pairs]
        result.update(acc=float(np.mean(np.array(preds) == np.array(labels))), eval_loss=eval_loss,
                      logits=logits.tolist())
        if args.do_train:
            result["in_memory_logits"] = evaluate(in_memory, dev, args.eval_batch_size)[1].tolist()
        half_preds, half_logits, _ = evaluate(model.half(), dev, args.eval_batch_size)
        result.update(half_agreement=float(np.mean(np.array(half_preds) == np.array(preds))),
                      half_max_diff=float((half_logits - logits).abs().max()))
        with open(os.path.join(args.output_dir, "eval_results.txt"), "w") as writer:
            for key in ("acc", "eval_loss"):
                writer.write(f"{key} = {result[key]}\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
