"""bert_nb computes what Google's TensorFlow BERT computes, and converts its checkpoints faithfully.

Google's own code (bert-tensorflow's modeling.py, run_pretraining.py's heads, run_squad.py's span head) builds random
checkpoints and runs them; `convert_tf_checkpoint_to_pytorch` converts them; both sides run on one padded two-segment
batch. The real-weights test writes all-MiniLM-L6-v2 as a Google checkpoint and converts it back. Tests that need
TensorFlow skip without it (`pip install 'bert_nb[tf]'`); the others run everywhere."""
import json, logging, subprocess, sys

import numpy as np
import pytest
import torch

from bert_nb.config import BertConfig
from bert_nb.heads import BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification
from bert_nb.modeling import BertModel

TF_REASON = "the TensorFlow parity tests need TensorFlow and Google's BERT code: pip install 'bert_nb[tf]'"
ACTS = {'erf': 'gelu', 'tanh': 'gelu_new'}  # Google's GELU -> the bert_config.json hidden_act that means it


@pytest.fixture(scope='module')
def tf():
    tf = pytest.importorskip('tensorflow', reason=TF_REASON)
    pytest.importorskip('bert', reason=TF_REASON)
    return tf


def tiny_config(hidden_act='gelu'):
    return BertConfig(150, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                      hidden_act=hidden_act, max_position_embeddings=64, initializer_range=0.2)


def padded_batch(vocab_size=150, lengths=(16, 11, 7), split=(9, 5, 4), T=16, seed=0):
    "Random ids; row i has lengths[i] real tokens, the first split[i] of them segment 0, the rest segment 1; then padding."
    rng = np.random.default_rng(seed)
    ids, mask, seg = (np.zeros((len(lengths), T), np.int32) for _ in range(3))
    for i, (n, a) in enumerate(zip(lengths, split)):
        ids[i, :n], mask[i, :n], seg[i, a:n] = rng.integers(1, vocab_size, n), 1, 1
    return dict(input_ids=ids, input_mask=mask, segment_ids=seg)


@pytest.fixture(scope='module')
def pretraining(tf, tmp_path_factory):
    "Per GELU: Google's outputs on a Google-built pre-training checkpoint, and the folder of its conversion."
    from bert_nb.convert import convert_tf_checkpoint_to_pytorch
    from bert_nb.tf_parity import google_outputs, random_google_checkpoint
    runs, batch = {}, padded_batch()
    for seed, (gelu, act) in enumerate(ACTS.items()):
        d = tmp_path_factory.mktemp(gelu)
        prefix = random_google_checkpoint(tiny_config(act), d/'bert_model.ckpt', head='pretraining', seed=seed)
        google = google_outputs(prefix, tiny_config(act), batch, head='pretraining', gelu=gelu)
        convert_tf_checkpoint_to_pytorch(prefix, d/'bert_config.json', d/'pytorch_model.bin')
        runs[gelu] = dict(google=google, dir=d, prefix=prefix, batch=batch)
    return runs


@pytest.mark.parametrize('gelu', list(ACTS))
def test_pretraining_parity(pretraining, gelu):
    "The embeddings, every encoder layer, the pooled output, MLM and NSP logits agree with Google's (TOLERANCES)."
    from bert_nb.tf_parity import bert_nb_outputs, check_parity, differences
    run = pretraining[gelu]
    model = BertForPreTraining.from_pretrained(run['dir'])
    assert model.config.hidden_act == ACTS[gelu]
    rows = differences(run['google'], bert_nb_outputs(model, run['batch']))
    assert [r['output'] for r in rows] == ['embeddings', 'layer_0', 'layer_1', 'layer_2', 'layer_3', 'pooled',
                                           'mlm_logits', 'nsp_logits']
    check_parity(rows)


@pytest.mark.parametrize('gelu', list(ACTS))
def test_wrong_activation_is_caught(pretraining, gelu):
    "The same weights read with the other GELU differ by more than 10x the tolerance: the parity test can fail."
    from bert_nb.tf_parity import TOLERANCES, bert_nb_outputs, differences
    run = pretraining[gelu]
    wrong = BertForPreTraining(tiny_config(ACTS['tanh' if gelu == 'erf' else 'erf']))
    wrong.load_state_dict(torch.load(run['dir']/'pytorch_model.bin', weights_only=True))
    rows = {r['output']: r for r in differences(run['google'], bert_nb_outputs(wrong, run['batch']))}
    assert rows['layer_3']['max_abs'] > 10 * TOLERANCES['hidden'][1]
    assert rows['mlm_logits']['max_abs'] > 10 * TOLERANCES['logits'][1]


def test_squad_span_loss_parity(tf, tmp_path):
    "run_squad.py's create_model + model_fn loss == BertForQuestionAnswering's loss, with the cls/squad layer converted."
    from bert_nb.convert import convert_tf_checkpoint_to_pytorch
    from bert_nb.tf_parity import bert_nb_outputs, check_parity, differences, google_outputs, random_google_checkpoint
    prefix = random_google_checkpoint(tiny_config(), tmp_path/'bert_model.ckpt', head='squad', seed=2)
    batch = {**padded_batch(), 'start_positions': np.array([3, 10, 1], np.int32), 'end_positions': np.array([5, 12, 6], np.int32)}
    google = google_outputs(prefix, tiny_config(), batch, head='squad')
    convert_tf_checkpoint_to_pytorch(prefix, tmp_path/'bert_config.json', tmp_path/'pytorch_model.bin')
    qa = BertForQuestionAnswering.from_pretrained(tmp_path)
    assert qa.loading_report.newly_initialized == []  # qa_outputs came from cls/squad
    rows = differences(google, bert_nb_outputs(qa, batch))
    check_parity(rows)
    assert abs(float(google['squad_loss']) - float(bert_nb_outputs(qa, batch)['squad_loss'])) <= 2e-5


def test_minilm_round_trip(tf, tmp_path):
    "all-MiniLM-L6-v2 -> Google checkpoint -> Google's model agrees with bert_nb; converted back, every weight is bit-identical."
    from bert_nb.convert import convert_tf_checkpoint_to_pytorch, save_tf_checkpoint
    from bert_nb.hub import minilm_dir
    from bert_nb.tf_parity import bert_nb_outputs, check_parity, differences, google_outputs
    from bert_nb.tokenization import BertTokenizer
    minilm = BertModel.from_pretrained(minilm_dir())
    tok = BertTokenizer(minilm_dir()/'vocab.txt', do_lower_case=True)
    pairs = [("Who was Jim Henson?", "Jim Henson was a puppeteer."), ("The cat sat on the mat.", "It purred."),
             ("BERT reads both directions.", "Google released it in 2018 with TensorFlow checkpoints.")]
    enc = [tok(a, b, max_length=24, padding='max_length', truncation=True) for a, b in pairs]
    batch = {k: np.array([e[j] for e in enc], np.int32) for k, j in
             (('input_ids', 'input_ids'), ('input_mask', 'attention_mask'), ('segment_ids', 'token_type_ids'))}
    assert not batch['input_mask'].all() and batch['segment_ids'].any()
    prefix = save_tf_checkpoint(minilm, tmp_path/'bert_model.ckpt')
    google = google_outputs(prefix, minilm.config, batch, gelu='erf')
    convert_tf_checkpoint_to_pytorch(prefix, tmp_path/'bert_config.json', tmp_path/'pytorch_model.bin')
    back = BertModel.from_pretrained(tmp_path)
    assert list(back.state_dict()) == list(minilm.state_dict())
    changed = [k for k, v in minilm.state_dict().items() if not torch.equal(back.state_dict()[k], v)]
    assert not changed, f"the round trip changed {changed}"
    ours = bert_nb_outputs(back, batch)
    check_parity(differences(google, ours, mask=batch['input_mask']))  # hidden states at real tokens
    # at the padding positions float32 rounding grows in both implementations: both stay near a float64 run
    exact = BertModel(minilm.config).double().eval()
    exact.load_state_dict(minilm.state_dict())
    exact = bert_nb_outputs(exact, batch)
    for k in (k for k in exact if k.startswith('layer_')):
        assert np.abs(google[k] - exact[k]).max() < 5e-5 and np.abs(ours[k] - exact[k]).max() < 5e-5, k


# Bad inputs

def test_missing_checkpoint_files(tmp_path):
    "A checkpoint without its .index / .data files is named, with what is missing (no TensorFlow needed to say so)."
    from bert_nb.convert import convert_tf_checkpoint_to_pytorch
    tiny_config().to_json_file(tmp_path/'bert_config.json')
    with pytest.raises(FileNotFoundError, match=r"missing: .*bert_model\.ckpt\.index, .*bert_model\.ckpt\.data-00000-of-00001"):
        convert_tf_checkpoint_to_pytorch(tmp_path/'bert_model.ckpt', tmp_path/'bert_config.json', tmp_path/'out.bin')
    (tmp_path/'bert_model.ckpt.index').touch()
    with pytest.raises(FileNotFoundError, match=r"missing: .*bert_model\.ckpt\.data-00000-of-00001"):
        convert_tf_checkpoint_to_pytorch(tmp_path/'bert_model.ckpt', tmp_path/'bert_config.json', tmp_path/'out.bin')
    assert not (tmp_path/'out.bin').exists()


def test_config_that_does_not_match(pretraining, tmp_path):
    "A bert_config.json with another intermediate_size: the error names the TF variable, the PyTorch parameter and both shapes."
    from bert_nb.convert import convert_tf_checkpoint_to_pytorch
    cfg = tiny_config(); cfg.intermediate_size = 128
    cfg.to_json_file(tmp_path/'bert_config.json')
    with pytest.raises(ValueError) as e:
        convert_tf_checkpoint_to_pytorch(pretraining['erf']['prefix'], tmp_path/'bert_config.json', tmp_path/'out.bin')
    assert ('TensorFlow variable bert/encoder/layer_0/intermediate/dense/kernel is [64, 256], transposed to [256, 64], '
            'but PyTorch parameter bert.encoder.layer.0.intermediate.dense.weight of BertForPreTraining is [128, 64]') in str(e.value)
    assert not (tmp_path/'out.bin').exists()


def test_non_bert_checkpoint(tf, tmp_path):
    from bert_nb.convert import convert_tf_checkpoint_to_pytorch, write_tf_checkpoint
    write_tf_checkpoint({'resnet/conv1/kernel': np.zeros((3, 3, 3, 8), np.float32), 'global_step': np.int64(5)}, tmp_path/'model.ckpt')
    tiny_config().to_json_file(tmp_path/'bert_config.json')
    with pytest.raises(ValueError, match=r"is not a BERT checkpoint: it has no bert/embeddings/word_embeddings"):
        convert_tf_checkpoint_to_pytorch(tmp_path, tmp_path/'bert_config.json', tmp_path/'out.bin')


def test_optimizer_slots_are_skipped(pretraining, tmp_path, caplog):
    "A training checkpoint (adam_m, adam_v per weight, global_step) converts to the same weights; each slot is logged."
    from bert_nb.convert import convert_tf_checkpoint_to_pytorch, load_tf_checkpoint, write_tf_checkpoint
    run = pretraining['erf']
    tf_vars = load_tf_checkpoint(run['prefix'])
    training = {**tf_vars, 'global_step': np.int64(1000),
                **{f'{n}/adam_m': np.ones_like(v) for n, v in tf_vars.items()}, **{f'{n}/adam_v': np.ones_like(v) for n, v in tf_vars.items()}}
    prefix = write_tf_checkpoint(training, tmp_path/'model.ckpt-1000')
    with caplog.at_level(logging.INFO, logger='bert_nb.convert'):
        out = convert_tf_checkpoint_to_pytorch(prefix, run['dir']/'bert_config.json', tmp_path/'pytorch_model.bin')
    assert 'Skipping global_step: optimizer state, not a weight' in caplog.text
    assert 'Skipping bert/pooler/dense/kernel/adam_v' in caplog.text
    got, want = torch.load(out, weights_only=True), torch.load(run['dir']/'pytorch_model.bin', weights_only=True)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_classifier_checkpoint(tf, tmp_path):
    "run_classifier.py's output_weights/output_bias: a BertForSequenceClassification with num_labels read from the shape."
    from bert_nb.convert import convert_tf_checkpoint_to_pytorch, load_tf_checkpoint, save_tf_checkpoint
    torch.manual_seed(0)
    clf = BertForSequenceClassification(tiny_config(), num_labels=3)
    prefix = save_tf_checkpoint(clf, tmp_path/'model.ckpt')
    tf_vars = load_tf_checkpoint(prefix)
    assert tf_vars['output_weights'].shape == (3, 64) and tf_vars['bert/pooler/dense/kernel'].shape == (64, 64)
    assert np.array_equal(tf_vars['bert/pooler/dense/kernel'], clf.bert.pooler.dense.weight.detach().numpy().T)
    sd = torch.load(convert_tf_checkpoint_to_pytorch(prefix, tmp_path/'bert_config.json', tmp_path/'o.bin'), weights_only=True)
    assert all(torch.equal(sd[k], v) for k, v in clf.state_dict().items())


def test_from_pretrained_from_tf(pretraining):
    "from_pretrained(folder, from_tf=True): the seed's way to load a TF checkpoint, into any head."
    from bert_nb.tf_parity import bert_nb_outputs, check_parity, differences
    run = pretraining['erf']
    model = BertForPreTraining.from_pretrained(run['dir'], from_tf=True)
    check_parity(differences(run['google'], bert_nb_outputs(model, run['batch'])))
    qa = BertForQuestionAnswering.from_pretrained(run['dir'], from_tf=True)
    assert qa.loading_report.newly_initialized == ['qa_outputs.weight', 'qa_outputs.bias']


def test_cli_converts(pretraining, tmp_path, capsys):
    "bert_nb convert_tf_checkpoint_to_pytorch, with the seed's positional arguments and with its script's flags."
    from bert_nb.cli import main
    run = pretraining['erf']
    want = torch.load(run['dir']/'pytorch_model.bin', weights_only=True)
    assert main(['convert_tf_checkpoint_to_pytorch', str(run['prefix']), str(run['dir']/'bert_config.json'), str(tmp_path/'a.bin')]) == 0
    assert main(['convert_tf_checkpoint_to_pytorch', '--tf_checkpoint_path', str(run['prefix']), '--bert_config_file',
                 str(run['dir']/'bert_config.json'), '--pytorch_dump_path', str(tmp_path), '--safetensors']) == 0
    assert f"Saved the PyTorch model to {tmp_path/'a.bin'}" in capsys.readouterr().out
    from bert_nb.pretrained import load_state_dict_file
    for f in (tmp_path/'a.bin', tmp_path/'model.safetensors'):
        got = load_state_dict_file(f)
        assert all(torch.equal(got[k], want[k]) for k in got) and set(want) - set(got) <= {'cls.predictions.decoder.weight'}


def test_cli_without_tensorflow(tmp_path):
    "Without TensorFlow the command says how to install it and exits non-zero."
    code = ("import sys; sys.modules['tensorflow'] = None; from bert_nb.cli import main; "
            "sys.exit(main(['convert_tf_checkpoint_to_pytorch', 'a.ckpt', 'c.json', 'o.bin']))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "pip install 'bert_nb[tf]'" in r.stderr, r.stderr


def test_import_bert_nb_never_imports_tensorflow():
    code = "import sys, bert_nb, bert_nb.convert, bert_nb.tf_parity, bert_nb.cli; print('tensorflow' in sys.modules)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == 'False'


# Moved from nbs/05_convert.ipynb: the notebook shows a few of each; these are the rest (no TensorFlow needed)

def test_variable_names_map_by_rule():
    from bert_nb.convert import is_transposed, tf_to_pytorch_name
    assert (tf_to_pytorch_name('bert/encoder/layer_0/attention/output/LayerNorm/beta')
            == 'bert.encoder.layer.0.attention.output.LayerNorm.bias')
    assert tf_to_pytorch_name('bert/pooler/dense/bias') == 'bert.pooler.dense.bias'
    assert tf_to_pytorch_name('cls/predictions/transform/dense/kernel') == 'cls.predictions.transform.dense.weight'
    assert tf_to_pytorch_name('cls/predictions/output_bias') == 'cls.predictions.bias'
    assert tf_to_pytorch_name('cls/seq_relationship/output_weights') == 'cls.seq_relationship.weight'
    assert tf_to_pytorch_name('cls/squad/output_bias') == 'qa_outputs.bias'
    assert ([is_transposed(n) for n in ('bert/pooler/dense/kernel', 'cls/seq_relationship/output_weights', 'output_weights')]
            == [True, False, False])
    for n in ('bert/encoder/layer_0/output/dense/kernel/adam_m', 'global_step', 'bert/pooler/dense/gamma',
              'bert/encoder/layer_0/output/LayerNorm/kernel', 'bert/embeddings/kernel', 'electra/embeddings/word_embeddings'):
        assert tf_to_pytorch_name(n) is None, n


def test_variables_that_do_not_fit_are_named():
    "More layers in the checkpoint than in the config, fewer, and a checkpoint that is not BERT's."
    from bert_nb.convert import pytorch_to_tf, tf_state_dict
    tiny = BertConfig(99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                      max_position_embeddings=32)
    deep = BertConfig(99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                      max_position_embeddings=32)
    torch.manual_seed(0)
    tf_vars = pytorch_to_tf(BertForPreTraining(tiny))
    with pytest.raises(ValueError) as e:
        tf_state_dict(tf_vars, BertModel(deep))
    assert 'the checkpoint has no variable for encoder.layer.1.attention.self.query.weight' in str(e.value)
    with pytest.raises(ValueError) as e:
        tf_state_dict(pytorch_to_tf(BertModel(deep)), BertModel(tiny))
    assert 'BertModel has no place for bert/encoder/layer_1/attention/output/LayerNorm/beta' in str(e.value)
    with pytest.raises(ValueError) as e:
        tf_state_dict({'resnet/conv1/kernel': np.zeros(3), 'global_step': np.int64(0)}, BertModel(tiny))
    assert 'is not a BERT checkpoint: it has no bert/embeddings/word_embeddings variable' in str(e.value)


def test_resolve_tf_checkpoint(tmp_path):
    "A prefix, one of its files or its folder; what is missing is named."
    from bert_nb.convert import resolve_tf_checkpoint
    d = tmp_path/'ckpt'
    d.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        resolve_tf_checkpoint(d/'bert_model.ckpt')
    assert f"missing: {d}/bert_model.ckpt.index, {d}/bert_model.ckpt.data-00000-of-00001" in str(e.value)
    (d/'bert_model.ckpt.index').touch()
    with pytest.raises(FileNotFoundError) as e:
        resolve_tf_checkpoint(d/'bert_model.ckpt')
    assert "missing: " + f"{d}/bert_model.ckpt.data-00000-of-00001" in str(e.value)
    (d/'bert_model.ckpt.data-00000-of-00002').touch()
    with pytest.raises(FileNotFoundError) as e:
        resolve_tf_checkpoint(d)
    assert "missing: " + f"{d}/bert_model.ckpt.data-00001-of-00002" in str(e.value)
    (d/'bert_model.ckpt.data-00001-of-00002').touch()
    assert resolve_tf_checkpoint(d) == f'{d}/bert_model.ckpt'
    assert resolve_tf_checkpoint(d/'bert_model.ckpt.index') == f'{d}/bert_model.ckpt'
    with pytest.raises(FileNotFoundError, match='nothing.index'):
        resolve_tf_checkpoint(d/'nothing')
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match=r'no TensorFlow checkpoint \(\*\.index\) in'):
        resolve_tf_checkpoint(tmp_path/'empty')
