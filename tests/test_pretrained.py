"""Tests of bert_nb.pretrained: finding a model's files (hub, folder, seed archive), reading weights safely, fitting a
checkpoint into BERT-shaped modules (prefixes, tied weights, shapes), and atomic, bit-exact saving.

The modules here are stand-ins with BERT's parameter names, so these tests need nothing of bert_nb.modeling. Every
download goes to a `HubServer` on 127.0.0.1 and every cache lies under tmp_path (HOME is moved there too).
"""
import argparse, logging, os, sys, tarfile
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # a checkout without `pip install -e .`

from bert_nb import pretrained
from bert_nb.config import BertConfig
from bert_nb.hub import HubDownloadError, hub_url, minilm_dir, serve_directory
from bert_nb.pretrained import (load_state_dict_file, load_state_dict_into, normalize_keys, resolve_model_files,
                                save_pretrained)


# ---- BERT-shaped stand-ins ------------------------------------------------------------------------------------------
def tree(**kids):
    m = nn.Module()
    for k, v in kids.items(): setattr(m, k, v)
    return m


class TinyBert(nn.Module):
    "BERT's parameter names and shapes, no forward."
    def __init__(self, vocab=32, hidden=8, layers=2, inter=16, positions=16):
        super().__init__()
        lin, ln = nn.Linear, lambda: nn.LayerNorm(hidden)
        self.embeddings = tree(word_embeddings=nn.Embedding(vocab, hidden), position_embeddings=nn.Embedding(positions, hidden),
                               token_type_embeddings=nn.Embedding(2, hidden), LayerNorm=ln())
        self.embeddings.register_buffer('position_ids', torch.arange(positions))
        layer = lambda: tree(attention=tree(self=tree(query=lin(hidden, hidden), key=lin(hidden, hidden), value=lin(hidden, hidden)),
                                            output=tree(dense=lin(hidden, hidden), LayerNorm=ln())),
                             intermediate=tree(dense=lin(hidden, inter)), output=tree(dense=lin(inter, hidden), LayerNorm=ln()))
        self.encoder = tree(layer=nn.ModuleList(layer() for _ in range(layers)))
        self.pooler = tree(dense=lin(hidden, hidden))


class TinyBertWithHeads(nn.Module):
    "`bert` + pretraining heads (decoder tied to the word embeddings) + a classifier."
    def __init__(self, **kw):
        super().__init__()
        self.bert = TinyBert(**kw)
        vocab, hidden = self.bert.embeddings.word_embeddings.weight.shape
        pred = tree(transform=tree(dense=nn.Linear(hidden, hidden), LayerNorm=nn.LayerNorm(hidden)),
                    decoder=nn.Linear(hidden, vocab, bias=False), bias=nn.Parameter(torch.zeros(vocab)))
        pred.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.cls = tree(predictions=pred, seq_relationship=nn.Linear(hidden, 2))
        self.classifier = nn.Linear(hidden, 3)


HEADS = ['cls.predictions.bias', 'cls.predictions.transform.dense.weight', 'cls.predictions.transform.dense.bias',
         'cls.predictions.transform.LayerNorm.weight', 'cls.predictions.transform.LayerNorm.bias',
         'cls.seq_relationship.weight', 'cls.seq_relationship.bias', 'classifier.weight', 'classifier.bias']
TINY_CONFIG = dict(vocab_size_or_config_json_file=32, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=16, max_position_embeddings=16)


def randomize(model, seed):
    "Fill every parameter with noise, so that a tensor left unloaded cannot pass for a loaded one."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters(): p.copy_(torch.randn(p.shape, generator=g))
    return model


def snapshot(model): return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def old_names(sd):
    "The seed's TensorFlow-era LayerNorm names."
    return {k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias', 'LayerNorm.beta'): v for k, v in sd.items()}


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    for k in ('BERT_NB_OFFLINE', 'HF_HUB_OFFLINE', 'HF_ENDPOINT', 'BERT_NB_ENDPOINT', 'PYTORCH_PRETRAINED_BERT_CACHE'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path/'home'))
    monkeypatch.setenv('BERT_NB_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('BERT_NB_NO_PROGRESS', '1')
    return tmp_path/'cache'


@pytest.fixture
def server(tmp_path, monkeypatch):
    with serve_directory(tmp_path/'hub') as srv:
        monkeypatch.setenv('BERT_NB_ENDPOINT', srv.url)
        yield srv


def safetensors_bytes(sd, tmp_path):
    from safetensors.torch import save_file
    save_file(sd, tmp_path/'tmp.safetensors'); data = (tmp_path/'tmp.safetensors').read_bytes()
    os.remove(tmp_path/'tmp.safetensors')
    return data


# ---- finding the files ----------------------------------------------------------------------------------------------
def test_shortcut_name_downloads_config_and_safetensors(server, env, tmp_path):
    src = randomize(TinyBert(), 0)
    server.add('bert-base-uncased', 'config.json', BertConfig(**TINY_CONFIG).to_json_string())
    server.add('bert-base-uncased', 'model.safetensors', safetensors_bytes(src.state_dict(), tmp_path))
    server.add('bert-base-uncased', 'pytorch_model.bin', b'never fetched')
    config_file, weights_file = resolve_model_files('bert-base-uncased', cache_dir=tmp_path/'c')
    assert Path(config_file).parent == Path(weights_file).parent == tmp_path/'c'
    assert BertConfig.from_json_file(config_file) == BertConfig(**TINY_CONFIG)
    model = TinyBert()
    report = load_state_dict_into(model, load_state_dict_file(weights_file))
    assert (report.missing, report.unexpected) == ([], [])
    assert same(snapshot(model), snapshot(src))
    assert server.count('GET', hub_url('bert-base-uncased', 'pytorch_model.bin')) == 0
    assert not env.exists()  # cache_dir was honoured: nothing went to the default cache


def test_safetensors_404_falls_back_to_pytorch_model_bin(server, tmp_path):
    src = randomize(TinyBertWithHeads(), 1)
    torch.save(old_names(src.state_dict()), tmp_path/'w.bin')
    server.add('bert-base-chinese', 'config.json', BertConfig(**TINY_CONFIG).to_json_string())
    server.add('bert-base-chinese', 'pytorch_model.bin', (tmp_path/'w.bin').read_bytes())
    config_file, weights_file = resolve_model_files('bert-base-chinese')
    assert server.count('HEAD', hub_url('bert-base-chinese', 'model.safetensors')) == 1
    assert server.count('GET', hub_url('bert-base-chinese', 'pytorch_model.bin')) == 1
    model = TinyBertWithHeads()
    assert load_state_dict_into(model, load_state_dict_file(weights_file)).missing == []
    assert same(snapshot(model), snapshot(src))


def test_no_weights_on_hub_names_both_files(server):
    server.add('bert-large-cased', 'config.json', '{"vocab_size": 32}')
    with pytest.raises(HubDownloadError) as e: resolve_model_files('bert-large-cased')
    assert 'model.safetensors' in str(e.value) and 'pytorch_model.bin' in str(e.value) and 'HTTP 404' in str(e.value)


def test_offline_falls_back_to_a_cached_pytorch_model_bin(server, monkeypatch, tmp_path):
    server.add('bert-base-cased', 'config.json', '{"vocab_size": 32}')
    server.add('bert-base-cased', 'pytorch_model.bin', b'cached weights')
    first = resolve_model_files('bert-base-cased')  # online: safetensors 404, .bin downloaded
    server.add('bert-base-cased', 'model.safetensors', b'appeared later')
    monkeypatch.setenv('BERT_NB_OFFLINE', '1')
    assert resolve_model_files('bert-base-cased') == first
    assert Path(first[1]).read_bytes() == b'cached weights'


def test_seed_archive_resolves_and_loads(tmp_path, env):
    src = randomize(TinyBertWithHeads(), 2)
    folder = tmp_path/'pack'/'bert-tiny-uncased'
    folder.mkdir(parents=True)
    BertConfig(**TINY_CONFIG).to_json_file(folder/'bert_config.json')
    sd = old_names(src.state_dict())
    assert sum(k.endswith('.gamma') for k in sd) == 1 + 2*2 + 1
    torch.save(sd, folder/'pytorch_model.bin')
    with tarfile.open(tmp_path/'bert-tiny-uncased.tar.gz', 'w:gz') as tf: tf.add(folder, arcname='bert-tiny-uncased')
    config_file, weights_file = resolve_model_files(tmp_path/'bert-tiny-uncased.tar.gz')
    assert (Path(config_file).name, Path(weights_file).name) == ('bert_config.json', 'pytorch_model.bin')
    assert Path(config_file).is_relative_to(env)  # extracted into the cache, once
    model = TinyBertWithHeads()
    report = load_state_dict_into(model, load_state_dict_file(weights_file))
    assert (report.missing, report.unexpected) == ([], [])
    assert same(snapshot(model), snapshot(src))


def test_directory_without_weights_says_what_it_holds(tmp_path):
    (tmp_path/'m').mkdir(); (tmp_path/'m'/'config.json').write_text('{}'); (tmp_path/'m'/'vocab.txt').write_text('')
    with pytest.raises(FileNotFoundError, match=r'looked for model\.safetensors or pytorch_model\.bin; it holds: config\.json, vocab\.txt'):
        resolve_model_files(tmp_path/'m')
    (tmp_path/'e').mkdir()
    with pytest.raises(FileNotFoundError, match=r'no config file in .*: looked for config\.json or bert_config\.json; it holds: nothing'):
        resolve_model_files(tmp_path/'e')


# ---- reading weights ------------------------------------------------------------------------------------------------
def test_torch_load_refuses_a_pickle_holding_objects(tmp_path):
    torch.save({'bert.pooler.dense.weight': torch.ones(2, 2), 'args': argparse.Namespace(lr=3e-5)}, tmp_path/'ckpt.bin')
    with pytest.raises(ValueError) as e: load_state_dict_file(tmp_path/'ckpt.bin')
    msg = str(e.value)
    assert str(tmp_path/'ckpt.bin') in msg and 'argparse.Namespace' in msg and 'weights_only' in msg
    torch.save({'epoch': 3, 'w': torch.ones(1)}, tmp_path/'mixed.bin')  # loads under weights_only, but is no state dict
    with pytest.raises(ValueError, match="mixed.bin does not hold a state dict"): load_state_dict_file(tmp_path/'mixed.bin')


def test_truncated_files_name_the_file(tmp_path):
    sd = TinyBert().state_dict()
    data = safetensors_bytes(sd, tmp_path)
    (tmp_path/'model.safetensors').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='truncated or corrupt') as e: load_state_dict_file(tmp_path/'model.safetensors')
    assert str(tmp_path/'model.safetensors') in str(e.value)
    torch.save(sd, tmp_path/'full.bin')
    (tmp_path/'pytorch_model.bin').write_bytes((tmp_path/'full.bin').read_bytes()[:1000])
    with pytest.raises(ValueError, match='truncated or corrupt') as e: load_state_dict_file(tmp_path/'pytorch_model.bin')
    assert str(tmp_path/'pytorch_model.bin') in str(e.value)
    with pytest.raises(FileNotFoundError, match='nothing.bin'): load_state_dict_file(tmp_path/'nothing.bin')


def test_format_is_read_from_the_bytes_not_the_name(tmp_path):
    sd = snapshot(randomize(TinyBert(), 3))
    (tmp_path/'0123abcd').write_bytes(safetensors_bytes(sd, tmp_path))  # the download cache names files by hash
    torch.save(sd, tmp_path/'4567ef')
    assert same(load_state_dict_file(tmp_path/'0123abcd'), sd) and same(load_state_dict_file(tmp_path/'4567ef'), sd)


def test_normalize_keys_renames_only_layernorm_gamma_beta():
    assert normalize_keys({'a.LayerNorm.gamma': 1, 'a.LayerNorm.beta': 2, 'betamax.weight': 3}) == \
        {'a.LayerNorm.weight': 1, 'a.LayerNorm.bias': 2, 'betamax.weight': 3}
    with pytest.raises(ValueError, match="holds 'a.LayerNorm.weight' twice"): normalize_keys({'a.LayerNorm.weight': 1, 'a.LayerNorm.gamma': 2})


# ---- fitting a checkpoint into a model ------------------------------------------------------------------------------
def test_shape_mismatch_names_key_and_shapes_and_changes_nothing():
    model = randomize(TinyBertWithHeads(), 4)
    before = snapshot(model)
    other = randomize(TinyBertWithHeads(inter=24), 5).state_dict()
    with pytest.raises(ValueError) as e: load_state_dict_into(model, other)
    msg = str(e.value)
    assert 'bert.encoder.layer.0.intermediate.dense.weight is (24, 8) in the checkpoint, (16, 8) in the model' in msg
    assert 'bert.encoder.layer.1.output.dense.weight is (8, 24) in the checkpoint, (8, 16) in the model' in msg
    assert same(snapshot(model), before)  # keys that did fit were not loaded either
    report = load_state_dict_into(model, other, strict_shapes=False)
    assert len(report.mismatched) == 3*2 and all(k in report.missing for k, *_ in report.mismatched)
    assert torch.equal(model.bert.pooler.dense.weight, other['bert.pooler.dense.weight'])


def test_shape_mismatch_under_a_new_prefix_names_both_keys():
    with pytest.raises(ValueError, match=r'embeddings\.word_embeddings\.weight \(as bert\.embeddings\.word_embeddings\.weight\) is \(40, 8\)'):
        load_state_dict_into(TinyBertWithHeads(), TinyBert(vocab=40).state_dict())


def test_base_checkpoint_into_head_model_adds_prefix(caplog):
    src, model = randomize(TinyBert(), 6), randomize(TinyBertWithHeads(), 7)
    heads_before = {k: v for k, v in snapshot(model).items() if not k.startswith('bert.')}
    with caplog.at_level(logging.INFO, logger='bert_nb.pretrained'):
        report = load_state_dict_into(model, src.state_dict())
    assert report.missing == HEADS and report.newly_initialized == HEADS and report.unexpected == []
    assert 'cls.predictions.decoder.weight' in report.loaded
    assert same(snapshot(model.bert), snapshot(src))
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert torch.equal(model.cls.predictions.decoder.weight, src.embeddings.word_embeddings.weight)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in heads_before.items() if k != 'cls.predictions.decoder.weight')
    assert f"Weights of TinyBertWithHeads not initialized from pretrained model: {HEADS}" in caplog.text
    assert 'task heads newly initialized: train them (9)' in str(report)


def test_head_checkpoint_into_base_model_strips_prefix(caplog):
    src, model = randomize(TinyBertWithHeads(), 8), TinyBert()
    with caplog.at_level(logging.INFO, logger='bert_nb.pretrained'):
        report = load_state_dict_into(model, old_names(src.state_dict()))
    assert report.missing == [] and report.newly_initialized == []
    assert report.unexpected == HEADS[:5] + ['cls.predictions.decoder.weight'] + HEADS[5:]
    assert same(snapshot(model), snapshot(src.bert))
    assert "Weights from pretrained model not used in TinyBert: ['cls.predictions.bias'" in caplog.text


def test_prefixed_checkpoint_into_head_and_bare_into_base():
    for model, src in ((TinyBertWithHeads(), randomize(TinyBertWithHeads(), 9)), (TinyBert(), randomize(TinyBert(), 10))):
        report = load_state_dict_into(model, src.state_dict())
        assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])
        assert same(snapshot(model), snapshot(src))


def test_position_ids_is_ignored_on_both_sides():
    model = TinyBert()
    sd = {k: v for k, v in randomize(TinyBert(), 11).state_dict().items() if k != 'embeddings.position_ids'}
    sd['bert.embeddings.position_ids'] = torch.arange(512)[None]  # another shape: must not matter
    report = load_state_dict_into(model, sd)
    assert (report.missing, report.unexpected) == ([], [])
    assert torch.equal(model.embeddings.position_ids, torch.arange(16))


def test_tied_names_that_differ_in_the_checkpoint_keep_the_embedding(caplog):
    sd = snapshot(randomize(TinyBertWithHeads(), 12))
    sd['cls.predictions.decoder.weight'] = torch.zeros_like(sd['cls.predictions.decoder.weight'])
    model = TinyBertWithHeads()
    with caplog.at_level(logging.WARNING, logger='bert_nb.pretrained'): load_state_dict_into(model, sd)
    assert torch.equal(model.cls.predictions.decoder.weight, sd['bert.embeddings.word_embeddings.weight'])
    assert 'differs in the checkpoint' in caplog.text


def test_two_checkpoint_keys_for_one_parameter_is_an_error():
    sd = TinyBert().state_dict()
    sd['bert.pooler.dense.bias'] = sd['pooler.dense.bias']
    with pytest.raises(ValueError, match="'pooler.dense.bias' and 'bert.pooler.dense.bias' both load into 'pooler.dense.bias'"):
        load_state_dict_into(TinyBert(), sd)


def test_real_minilm_fills_every_tensor():
    d = minilm_dir()
    config_file, weights_file = resolve_model_files(d)
    assert (Path(config_file), Path(weights_file)) == (d/'config.json', d/'model.safetensors')
    c = BertConfig.from_json_file(config_file)
    model = TinyBert(vocab=c.vocab_size, hidden=c.hidden_size, layers=c.num_hidden_layers, inter=c.intermediate_size,
                     positions=c.max_position_embeddings)
    sd = load_state_dict_file(weights_file)
    report = load_state_dict_into(model, sd)
    assert (report.missing, report.unexpected, report.newly_initialized) == ([], [], [])
    assert len(report.loaded) == len(sd) - 1 == 103  # all but the position_ids buffer
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items() if k != 'embeddings.position_ids')
    head = TinyBertWithHeads(vocab=c.vocab_size, hidden=c.hidden_size, layers=c.num_hidden_layers, inter=c.intermediate_size,
                             positions=c.max_position_embeddings)
    report = load_state_dict_into(head, sd)
    assert report.missing == report.newly_initialized == HEADS
    assert torch.equal(head.cls.predictions.decoder.weight, sd['embeddings.word_embeddings.weight'])


def test_names_match_the_seed_and_transformers(tmp_path):
    "A checkpoint of the seed's BertForPreTraining fits the stand-in; what we save loads into transformers' BertModel."
    import pytorch_pretrained_bert as ppb
    seed = ppb.BertForPreTraining(ppb.BertConfig(32, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=16, max_position_embeddings=16))
    report = load_state_dict_into(TinyBertWithHeads(), seed.state_dict())
    assert report.unexpected == [] and report.missing == ['classifier.weight', 'classifier.bias']
    transformers = pytest.importorskip('transformers')
    src = randomize(TinyBert(), 13)
    save_pretrained(src, BertConfig(**TINY_CONFIG), tmp_path/'out')
    hf, info = transformers.BertModel.from_pretrained(tmp_path/'out', output_loading_info=True)
    assert info['missing_keys'] in ([], set()) and info['mismatched_keys'] in ([], set())
    hf_sd = hf.state_dict()
    assert all(torch.equal(hf_sd[k], v) for k, v in src.state_dict().items() if k != 'embeddings.position_ids')


# ---- saving ---------------------------------------------------------------------------------------------------------
def test_save_then_load_is_bit_identical_and_stays_tied(tmp_path):
    src = randomize(TinyBertWithHeads(), 14)
    config_file, weights_file = save_pretrained(src, BertConfig(**TINY_CONFIG), tmp_path/'a'/'b')
    assert sorted(os.listdir(tmp_path/'a'/'b')) == ['config.json', 'model.safetensors']
    assert resolve_model_files(tmp_path/'a'/'b') == (config_file, weights_file)
    stored = load_state_dict_file(weights_file)
    assert 'cls.predictions.decoder.weight' not in stored and 'bert.embeddings.word_embeddings.weight' in stored
    model = randomize(TinyBertWithHeads(), 15)
    report = load_state_dict_into(model, stored)
    assert (report.missing, report.unexpected) == ([], [])
    assert same(snapshot(model), snapshot(src))
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert BertConfig.from_json_file(config_file) == BertConfig(**TINY_CONFIG)
    umask = os.umask(0); os.umask(umask)
    assert os.stat(weights_file).st_mode & 0o777 == 0o666 & ~umask  # readable as any new file, not a private temp file


def test_save_writes_contiguous_copies_of_views(tmp_path):
    model = TinyBert()
    with torch.no_grad():  # a transposed (non-contiguous) weight and a weight that is a view into a bigger block
        model.pooler.dense.weight = nn.Parameter(torch.randn(8, 8).t())
        model.encoder.layer[0].output.dense.weight = nn.Parameter(torch.randn(8, 40)[:, 4:20])
    _, weights_file = save_pretrained(model, BertConfig(**TINY_CONFIG), tmp_path)
    assert same(load_state_dict_file(weights_file), snapshot(model))


def test_failed_save_keeps_the_old_files_and_leaves_no_temp(tmp_path, monkeypatch):
    old = randomize(TinyBert(), 16)
    save_pretrained(old, BertConfig(**TINY_CONFIG), tmp_path)
    files_before = {f: (tmp_path/f).read_bytes() for f in os.listdir(tmp_path)}
    from bert_nb import hub

    def half_then_fail(fd):  # the weights are written (to the temp file), then the disk is full
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(hub.os, 'fsync', half_then_fail)
    new_config = BertConfig(**{**TINY_CONFIG, 'hidden_dropout_prob': 0.3})
    with pytest.raises(OSError, match='No space left'): save_pretrained(randomize(TinyBert(), 17), new_config, tmp_path)
    assert {f: (tmp_path/f).read_bytes() for f in os.listdir(tmp_path)} == files_before  # no temp file, old files whole
    model = TinyBert()
    load_state_dict_into(model, load_state_dict_file(tmp_path/'model.safetensors'))
    assert same(snapshot(model), snapshot(old))


def test_notebook_round_trip(tmp_path):
    "Moved from nbs/01b_pretrained.ipynb: the saved folder holds the two files, and they read back in full."
    torch.manual_seed(1)
    head, config = TinyBertWithHeads(), BertConfig(vocab_size_or_config_json_file=32, hidden_size=8, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    out = tmp_path/'saved'
    assert save_pretrained(head, config, out) == (str(out/'config.json'), str(out/'model.safetensors'))
    assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors']
    assert BertConfig.from_json_file(out/'config.json') == config
    stored = load_state_dict_file(resolve_model_files(out)[1])
    fresh = TinyBertWithHeads()
    r = load_state_dict_into(fresh, stored)
    assert (r.missing, r.unexpected) == ([], [])
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), fresh.state_dict().values()))
