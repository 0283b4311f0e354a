"""Model parity: bert_nb against Hugging Face transformers on the real all-MiniLM-L6-v2 weights, and against
pytorch-pretrained-bert 0.6.2 (the seed) on perturbed random weights: every head, every loss, one SGD step and all
gradients. `pytest -s` prints each measured max-abs difference."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import bert_nb
from bert_nb import BertConfig, BertModel, BertTokenizer, minilm_dir

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pytorch_pretrained_bert.modeling as seed

TOL = 1e-5  # float32 max-abs tolerance everywhere


def maxdiff(a, b, where=None):
    "Largest |a - b|, only at `where` (a bool mask broadcast to a's shape) when given."
    d = (a.detach().float() - b.detach().float()).abs()
    if where is not None: d = d[where.expand_as(d)]
    return d.max().item() if d.numel() else 0.0


def report(label, value, tol=TOL, what="max |diff|"):
    print(f"  {label:<58} {what} = {value:.3e}" + ("" if tol is None else f"  (tol {tol:.0e})"))
    return value


# ------------------------------------------------------------------------------------------------------------------
# 1. The real all-MiniLM-L6-v2 weights: bert_nb vs transformers
# ------------------------------------------------------------------------------------------------------------------
PAIRS = [("The cat sat on the mat.", "It was a sunny day."),
         ("What is the capital of France?", "Paris is the capital and largest city of France."),
         ("Hi", "Hello there, how are you doing today?"),
         ("BERT reads text in both directions at once, which helps it understand words in context.", "Yes.")]


@pytest.fixture(scope="module")
def real():
    "bert_nb BertModel and transformers BertModel (sdpa and eager) on the same real weights, and a padded batch of pairs."
    import safetensors.torch
    import transformers
    transformers.utils.logging.disable_progress_bar()
    d = minilm_dir()
    sd = safetensors.torch.load_file(str(d / "model.safetensors"))
    assert "embeddings.position_ids" in sd, "the Hugging Face file should carry the position_ids buffer"
    sd.pop("embeddings.position_ids")
    nb = BertModel(BertConfig.from_json_file(d / "config.json"))
    nb.load_state_dict(sd, strict=True)
    hf_sdpa = transformers.BertModel.from_pretrained(str(d), attn_implementation="sdpa", dtype=torch.float32)
    hf_eager = transformers.BertModel.from_pretrained(str(d), attn_implementation="eager", dtype=torch.float32)
    for m in (nb, hf_sdpa, hf_eager):
        m.eval()
        assert not m.training and all(p.dtype == torch.float32 for p in m.parameters())
    # both loaders read the same numbers
    hf_sd = hf_sdpa.state_dict()
    assert max(maxdiff(v, hf_sd[k]) for k, v in nb.state_dict().items()) == 0.0
    enc = BertTokenizer(str(d / "vocab.txt"))([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    ids, tt, mask = enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]
    assert (ids[:, 0] == 101).all() and (ids == 102).sum() == 2 * len(PAIRS), "[CLS] a [SEP] b [SEP] with the real vocab"
    assert (tt == 1).any() and (mask == 0).any() and len(set(mask.sum(1).tolist())) == len(PAIRS), \
        "both token types, some padding, different lengths"
    return dict(nb=nb, hf_sdpa=hf_sdpa, hf_eager=hf_eager, ids=ids, tt=tt, mask=mask)


def test_real_weights_hidden_states_and_pooled_match_transformers(real):
    "Every layer's output and the pooled output of all-MiniLM-L6-v2, bert_nb (SDPA) vs transformers (SDPA)."
    nb, hf, ids, tt, mask = real["nb"], real["hf_sdpa"], real["ids"], real["tt"], real["mask"]
    tok = mask.bool()[:, :, None]  # (B, T, 1) real tokens
    with torch.no_grad():
        layers, pooled = nb(ids, tt, mask)  # the default path: the real tokens only
        padded_layers, _ = nb.set_unpad(False)(ids, tt, mask)  # the padded path computes the padding positions too
        nb.set_unpad(True)
        emb = nb.embeddings(ids, tt)
        o = hf(input_ids=ids, token_type_ids=tt, attention_mask=mask, output_hidden_states=True)
    assert len(layers) == 6 and len(o.hidden_states) == 7
    print(f"\nall-MiniLM-L6-v2, batch {tuple(ids.shape)}, {int(mask.sum())} real tokens: bert_nb vs transformers (sdpa)")
    worst_real, worst_pad = report("embeddings, real tokens", maxdiff(emb, o.hidden_states[0], tok)), 0.0
    for i, (x, xp, y) in enumerate(zip(layers, padded_layers, o.hidden_states[1:])):
        r = report(f"layer {i + 1} (|h| up to {x.abs().max():.1f}), real tokens", maxdiff(x, y, tok))
        p = report(f"layer {i + 1}, padding positions, padded path (not asserted)", maxdiff(xp, y, ~tok), None)
        worst_real, worst_pad = max(worst_real, r), max(worst_pad, p)
    worst_real = max(worst_real, report("pooled output", maxdiff(pooled, o.pooler_output)))
    assert torch.equal(layers[-1], nb(ids, tt, mask, output_all_encoded_layers=False)[0])
    assert worst_real <= TOL
    # Padding positions read nothing the real ones do not, but their values are ill-conditioned (transformers' own
    # sdpa and eager paths differ there by ~1e-5 too); they only need to be the same numbers roughly.
    assert worst_pad <= 1e-3


def test_real_weights_attention_path_matches_sdpa_path(real):
    "bert_nb's explicit-softmax path (`output_attentions=True`) gives the SDPA path's outputs."
    nb, ids, tt, mask = real["nb"], real["ids"], real["tt"], real["mask"]
    tok = mask.bool()[:, :, None]
    with torch.no_grad():
        layers, pooled = nb.set_unpad(False)(ids, tt, mask)  # the padded SDPA path: padding positions too
        nb.set_unpad(True)
        layers2, pooled2, probs = nb(ids, tt, mask, output_attentions=True)
    print("\nall-MiniLM-L6-v2: bert_nb output_attentions=True path vs its SDPA path")
    r = max(report(f"layer {i + 1}, real tokens", maxdiff(x, y, tok)) for i, (x, y) in enumerate(zip(layers, layers2)))
    p = report("all layers, padding positions (not asserted)", max(maxdiff(x, y, ~tok) for x, y in zip(layers, layers2)), None)
    r = max(r, report("pooled output", maxdiff(pooled, pooled2)))
    assert len(probs) == 6 and probs[0].shape == (ids.size(0), 12, ids.size(1), ids.size(1))
    assert r <= TOL and p <= 1e-3


def test_real_weights_attention_probabilities_match_transformers_eager(real):
    "Per-layer attention probabilities: bert_nb vs transformers' eager attention."
    nb, hf, ids, tt, mask = real["nb"], real["hf_eager"], real["ids"], real["tt"], real["mask"]
    with torch.no_grad():
        _, _, probs = nb(ids, tt, mask, output_attentions=True)
        o = hf(input_ids=ids, token_type_ids=tt, attention_mask=mask, output_attentions=True)
    assert len(probs) == len(o.attentions) == 6
    print("\nall-MiniLM-L6-v2: attention probabilities, bert_nb vs transformers (eager)")
    worst = max(report(f"layer {i + 1}, all (B, heads, T, T) entries", maxdiff(x, y))
                for i, (x, y) in enumerate(zip(probs, o.attentions)))
    assert worst <= TOL
    pad_keys = (mask == 0)[:, None, None, :].expand_as(probs[0])
    for x in probs:
        assert (x[pad_keys] == 0).all(), "padding keys get exactly zero probability"
        torch.testing.assert_close(x.sum(-1), torch.ones_like(x[..., 0]))


# ------------------------------------------------------------------------------------------------------------------
# 2. Perturbed random weights: bert_nb vs the seed, every model
# ------------------------------------------------------------------------------------------------------------------
SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)
B, T, V = 4, 13, 99
LENGTHS = [13, 9, 11, 5]  # one row without padding, three with


def configs(hidden_act="gelu", seed_act=None, dropout=0.1):
    "The same small config for bert_nb and for the seed (whose `hidden_act` may be a function)."
    kw = dict(SMALL, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertConfig(V, hidden_act=hidden_act, **kw), seed.BertConfig(V, hidden_act=seed_act or hidden_act, **kw)


def perturb_(model, seed_=0, std=0.2):
    "Add N(0, std) noise to every parameter in place: weights, biases and LayerNorm gains/biases all move off their init."
    g = torch.Generator().manual_seed(seed_)
    with torch.no_grad():
        for p in model.parameters():  # tied weights appear once
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def build(name, hidden_act="gelu", seed_act=None, dropout=0.1, **extra):
    "(bert_nb model, seed model) of class `name`, both holding the same perturbed state dict, in eval mode."
    cfg_nb, cfg_seed = configs(hidden_act, seed_act, dropout)
    torch.manual_seed(0)
    nb = perturb_(getattr(bert_nb, name)(cfg_nb, **extra)).set_unpad(False)  # every output, padding positions too
    ref = getattr(seed, name)(cfg_seed, **extra)
    sd = nb.state_dict()
    assert list(sd) == list(ref.state_dict()), "same parameter names, in the same order"
    ref.load_state_dict(sd, strict=True)
    for m in (nb, ref):
        m.eval()
        got = m.state_dict()
        assert all(torch.equal(got[k], v) for k, v in sd.items())
        if hasattr(m, "cls") and hasattr(m.cls, "predictions"):  # the MLM decoder is the word embedding matrix
            assert m.cls.predictions.decoder.weight is m.bert.embeddings.word_embeddings.weight, "decoder weight came untied"
    return nb, ref


def batch(choices=None, seed_=1):
    "Random ids (no [PAD]=0 among real tokens), [PAD] after each row's length, type 0 then type 1, like a tokenized pair."
    g = torch.Generator().manual_seed(seed_)
    shape = (B, T) if choices is None else (B, choices, T)
    lengths = torch.tensor(LENGTHS).view(-1, *([1] * (len(shape) - 1)))
    if choices is not None: lengths = lengths - torch.arange(choices).view(1, -1, 1)  # each choice its own length
    pos = torch.arange(T)
    mask = (pos < lengths).long().expand(shape).contiguous()
    ids = torch.randint(1, V, shape, generator=g) * mask
    tt = ((pos >= (lengths + 1) // 2) & (pos < lengths)).long().expand(shape).contiguous()
    assert (tt == 1).any() and (mask == 0).any() and (mask == 1).all(-1).any()
    return ids, tt, mask


def mlm_labels(ids, mask, seed_=2):
    "Labels at ~30% of the real tokens, -1 (ignored) elsewhere."
    g = torch.Generator().manual_seed(seed_)
    pick = (torch.rand(ids.shape, generator=g) < 0.3) & mask.bool()
    labels = torch.where(pick, torch.randint(0, V, ids.shape, generator=g), torch.full_like(ids, -1))
    assert (labels >= 0).any() and (labels == -1).any()
    return labels


def run_model(name, m):
    "{output name: tensor} of model `m` (class `name`): outputs without labels, then losses with labels."
    ids, tt, mask = batch()
    g = torch.Generator().manual_seed(3)
    out = {}
    if name == "BertModel":
        layers, pooled = m(ids, tt, mask)
        out.update({f"encoded_layers[{i}]": x for i, x in enumerate(layers)}, pooled_output=pooled)
        last, pooled_last = m(ids, tt, mask, output_all_encoded_layers=False)
        out.update({"last layer only": last, "pooled (last layer only)": pooled_last})
        out["no mask, no token types: layer 3"] = m(ids)[0][-1]
    elif name == "BertForPreTraining":
        out["prediction_scores"], out["seq_relationship_score"] = m(ids, tt, mask)
        out["loss (MLM + NSP)"] = m(ids, tt, mask, masked_lm_labels=mlm_labels(ids, mask),
                                    next_sentence_label=torch.tensor([0, 1, 1, 0]))
    elif name == "BertForMaskedLM":
        out["prediction_scores"] = m(ids, tt, mask)
        out["loss (MLM, -1 ignored)"] = m(ids, tt, mask, masked_lm_labels=mlm_labels(ids, mask))
    elif name == "BertForNextSentencePrediction":
        out["seq_relationship_score"] = m(ids, tt, mask)
        out["loss (NSP)"] = m(ids, tt, mask, next_sentence_label=torch.tensor([1, 0, 0, 1]))
    elif name == "BertForSequenceClassification":
        out["logits"] = m(ids, tt, mask)
        out["loss"] = m(ids, tt, mask, labels=torch.tensor([2, 0, 1, 2]))
    elif name == "BertForMultipleChoice":
        cids, ctt, cmask = batch(choices=3)
        out["logits (B, choices)"] = m(cids, ctt, cmask)
        out["loss"] = m(cids, ctt, cmask, labels=torch.tensor([1, 2, 0, 1]))
    elif name == "BertForTokenClassification":
        labels = torch.randint(0, 3, (B, T), generator=g)
        out["logits (B, T, labels)"] = m(ids, tt, mask)
        out["loss (real tokens only)"] = m(ids, tt, mask, labels=labels)
        out["loss (no mask: every token)"] = m(ids, tt, labels=labels)
    elif name == "BertForQuestionAnswering":
        out["start_logits"], out["end_logits"] = m(ids, tt, mask)
        start, end = torch.tensor([0, 3, 2, T + 7]), torch.tensor([4, 5, 2, T + 9])  # the last pair lies outside: ignored
        out["loss (one span outside the sequence)"] = m(ids, tt, mask, start_positions=start.clone(), end_positions=end.clone())
        out["loss (positions as (B, 1))"] = m(ids, tt, mask, start_positions=start[:, None].clone(),
                                              end_positions=end[:, None].clone())
    return out


MODELS = [("BertModel", {}), ("BertForPreTraining", {}), ("BertForMaskedLM", {}), ("BertForNextSentencePrediction", {}),
          ("BertForSequenceClassification", {"num_labels": 3}), ("BertForMultipleChoice", {"num_choices": 3}),
          ("BertForTokenClassification", {"num_labels": 3}), ("BertForQuestionAnswering", {})]


def compare(name, a, b, title):
    "Run both models, print and return the worst difference; every output must exist in both and be finite."
    with torch.no_grad():
        oa, ob = run_model(name, a), run_model(name, b)
    assert list(oa) == list(ob)
    print(f"\n{title}")
    worst = 0.0
    for k in oa:
        assert oa[k].shape == ob[k].shape, k
        assert torch.isfinite(oa[k]).all(), k
        scale = ob[k].abs().max().item()
        worst = max(worst, report(f"{k} (|x| up to {scale:.2g})", maxdiff(oa[k], ob[k])))
    return worst


@pytest.mark.parametrize("name,extra", MODELS, ids=[n for n, _ in MODELS])
def test_random_weights_match_seed(name, extra):
    "Every output and every loss of each model class equals pytorch-pretrained-bert's on the same perturbed weights."
    a, b = build(name, **extra)
    assert compare(name, a, b, f"{name}{extra or ''}: bert_nb vs pytorch-pretrained-bert 0.6.2, perturbed weights") <= TOL


@pytest.mark.parametrize("act", ["gelu", "relu", "swish"])
def test_activations_match_seed(act):
    "The seed's three activations, in the encoder and in the MLM head transform."
    a, b = build("BertForPreTraining", hidden_act=act)
    assert compare("BertForPreTraining", a, b, f"hidden_act={act!r}: BertForPreTraining, bert_nb vs the seed") <= TOL


def gelu_tanh_by_hand(x):
    "Google's modeling.py GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


@pytest.mark.parametrize("act", ["gelu_tanh", "gelu_new"])
def test_gelu_tanh_matches_seed_given_the_formula(act):
    "bert_nb's tanh GELU vs the seed running the tanh formula (the seed takes a function as `hidden_act`)."
    a, b = build("BertForPreTraining", hidden_act=act, seed_act=gelu_tanh_by_hand)
    assert compare("BertForPreTraining", a, b, f"hidden_act={act!r} vs the seed with the tanh formula") <= TOL


def test_gelu_tanh_differs_from_gelu():
    "At this init the two GELUs give visibly different outputs, so the parity tests above would catch a swapped activation."
    a, _ = build("BertForPreTraining", hidden_act="gelu")
    t = bert_nb.BertForPreTraining(configs("gelu_tanh")[0])
    t.load_state_dict(a.state_dict())
    t.eval()
    with torch.no_grad():
        oa, ot = run_model("BertForPreTraining", a), run_model("BertForPreTraining", t)
    print("\ngelu vs gelu_tanh on the same perturbed weights (must DIFFER)")
    d = {k: report(k, maxdiff(oa[k], ot[k]), None) for k in oa}
    assert all(v > 1e-4 for k, v in d.items() if not k.startswith("loss")), "the scores must move by > 1e-4"
    assert d["loss (MLM + NSP)"] > 2 * TOL, "a mean over many tokens moves less, but still past the parity tolerance"


def test_regression_loss_is_mse():
    "`num_labels=1` is regression: the loss is the mean squared error of the logits (the seed has no regression)."
    a, b = build("BertForSequenceClassification", num_labels=1)
    ids, tt, mask = batch()
    target = torch.tensor([0.5, -1.25, 2.0, 0.0])
    with torch.no_grad():
        logits, logits_seed = a(ids, tt, mask), b(ids, tt, mask)
        loss = a(ids, tt, mask, labels=target)
    by_hand = F.mse_loss(logits.view(-1), target)
    print("\nregression, num_labels=1")
    report("logits vs the seed's (num_labels=1)", maxdiff(logits, logits_seed))
    report(f"loss {loss.item():.4f} vs F.mse_loss by hand", maxdiff(loss, by_hand))
    assert logits.shape == (B, 1) and maxdiff(logits, logits_seed) <= TOL
    assert loss.item() > 0 and maxdiff(loss, by_hand) <= TOL
    assert maxdiff(loss, ((logits.view(-1) - target) ** 2).mean()) <= TOL


# ------------------------------------------------------------------------------------------------------------------
# 3. Training: one SGD step
# ------------------------------------------------------------------------------------------------------------------
def test_one_sgd_step_matches_seed():
    "BertForSequenceClassification with dropout 0: one SGD step (lr 0.1) leaves the same parameters in both."
    a, b = build("BertForSequenceClassification", dropout=0.0, num_labels=3)
    ids, tt, mask = batch()
    labels = torch.tensor([2, 0, 1, 2])
    before = {k: v.clone() for k, v in a.state_dict().items()}
    for m in (a, b):
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        opt.zero_grad()
        m(ids, tt, mask, labels=labels).backward()
        opt.step()
    sa, sb = a.state_dict(), b.state_dict()
    moved = max(maxdiff(sa[k], before[k]) for k in sa)
    print("\none SGD step (lr 0.1), BertForSequenceClassification, dropout 0")
    report("parameter change by the step (must be > 1e-3)", moved, None, what="max |change|")
    worst = report("parameters after the step, bert_nb vs the seed", max(maxdiff(sa[k], sb[k]) for k in sa))
    assert moved > 1e-3 and worst <= TOL
    with torch.no_grad():  # and the stepped models still agree
        a.eval(); b.eval()
        assert report("logits after the step", maxdiff(a(ids, tt, mask), b(ids, tt, mask))) <= TOL


# ------------------------------------------------------------------------------------------------------------------
# 4. Gradients
# ------------------------------------------------------------------------------------------------------------------
def bert_model_loss(m, ids, tt, mask, real_only=True):
    "A loss that touches every layer and the pooler: fixed random projections of each layer's output and the pooled one."
    g = torch.Generator().manual_seed(4)
    dtype = m.pooler.dense.weight.dtype
    layers, pooled = m(ids, tt, mask)
    w = mask[:, :, None].to(dtype) if real_only else torch.ones(ids.shape + (1,), dtype=dtype)
    loss = sum((x * torch.randn(x.shape, generator=g).to(dtype) * w).sum() for x in layers)
    return loss + (pooled * torch.randn(pooled.shape, generator=g).to(dtype)).sum()


def grads(m, **kw):
    m.zero_grad()
    bert_model_loss(m, *batch(), **kw).backward()
    return {k: p.grad.clone() for k, p in m.named_parameters()}


def grad_diff(ga, gb):
    "max |ga - gb| / max(1, max |gb|): absolute for small gradients, relative to the tensor's scale for big ones."
    return maxdiff(ga, gb) / max(1.0, gb.abs().max().item())


KEY_BIAS = "attention.self.key.bias"  # softmax ignores a per-row constant: its true gradient is exactly 0


def test_bert_model_gradients_match_seed():
    "d(loss)/d(every parameter) of BertModel, bert_nb vs the seed, loss over the real tokens; in float64 they agree exactly."
    a, b = build("BertModel")
    a.train(); b.train()
    for m in (a, b):  # dropout off, but train mode (SDPA's training path)
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout): mod.p = 0.0
    ga, gb = grads(a), grads(b)
    assert list(ga) == list(gb)
    d = {k: grad_diff(ga[k], gb[k]) for k in ga}
    worst = max(d, key=d.get)
    big = max(gb[k].abs().max().item() for k in gb)
    print(f"\nBertModel gradients, {len(d)} parameters, |grad| up to {big:.3g}")
    report(f"worst absolute ({max(ga, key=lambda k: maxdiff(ga[k], gb[k]))})", max(maxdiff(ga[k], gb[k]) for k in ga), None)
    report(f"worst / max(1, max|g| of the tensor) ({worst})", d[worst])
    assert d[worst] <= TOL
    for k in gb:  # every parameter but the key biases gets a real gradient; those get float32 noise only
        assert (gb[k].abs().max() < 1e-4) if k.endswith(KEY_BIAS) else (gb[k].abs().max() > 1e-2), k
    # float64: the two implementations are the same function, up to float64 rounding
    ga64, gb64 = grads(a.double()), grads(b.double())
    worst64 = report("float64: worst absolute gradient difference", max(maxdiff(ga64[k], gb64[k]) for k in ga64), 1e-10)
    report("float64: key biases (0 in exact arithmetic)",
           max(gb64[k].abs().max().item() for k in gb64 if k.endswith(KEY_BIAS)), None, what="max |grad|")
    assert worst64 <= 1e-10


def test_pad_embedding_row_gets_no_gradient_like_seed():
    "The seed builds word_embeddings with padding_idx=0, so row 0 ([PAD]) never gets a gradient; bert_nb should match."
    a, b = build("BertModel")
    ga, gb = grads(a, real_only=False), grads(b, real_only=False)
    W = "embeddings.word_embeddings.weight"
    print("\nBertModel gradients, loss over the padding positions too")
    others = report("every gradient except the [PAD] row, / max(1, max|g|)",
                    max([grad_diff(ga[k], gb[k]) for k in ga if k != W] + [grad_diff(ga[W][1:], gb[W][1:])]))
    pad_nb, pad_seed = ga[W][0].abs().max().item(), gb[W][0].abs().max().item()
    report("word_embeddings row 0 ([PAD]), bert_nb", pad_nb, None, what="max |grad|")
    report("word_embeddings row 0 ([PAD]), seed", pad_seed, None, what="max |grad|")
    assert others <= TOL and pad_seed == 0.0  # plain failures: not the known difference
    assert pad_nb == 0.0, f"bert_nb's [PAD] embedding row gets a gradient of up to {pad_nb:.3g}; the seed's gets 0"


# --- Moved from nbs/02_model.ipynb: the notebook shows one example per idea, these are the rest ----------------

@pytest.fixture(scope="module")
def tiny():
    "The notebook's tiny BertModel (hidden 32, 2 layers, 4 heads) and a padded batch of 3 x 7."
    cfg = BertConfig(vocab_size_or_config_json_file=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
    B, T = 3, 7
    torch.manual_seed(0)
    ids = torch.randint(0, 99, (B, T))
    torch.manual_seed(0)
    model = BertModel(cfg).eval()
    am = torch.ones(B, T, dtype=torch.long)
    am[0, 5:] = 0
    tt = torch.zeros(B, T, dtype=torch.long)
    tt[:, 4:] = 1
    return model, ids, tt, am


def test_tiny_model_outputs_and_initialisation(tiny):
    "Last layer only, attention probabilities, and the initialisation (LayerNorm 1/0, biases 0, weights std 0.02)."
    model, ids, tt, am = tiny
    B, T = ids.shape
    with torch.no_grad():
        layers, pooled = model(ids, tt, am)
        last, pooled2 = model(ids, tt, am, output_all_encoded_layers=False)
        l3, p3, probs = model(ids, tt, am, output_attentions=True)
    assert (pooled2 - pooled).abs().max() < 1e-5
    assert (l3[-1] - layers[-1])[am == 1].abs().max() < 1e-5  # explicit path vs the default one, at real tokens
    assert probs[0].shape == (B, 4, T, T)
    assert torch.equal(model.embeddings.LayerNorm.weight, torch.ones(32))
    assert torch.equal(model.pooler.dense.bias, torch.zeros(32))
    assert abs(model.encoder.layer[0].attention.self.query.weight.std().item() - 0.02) < 0.005


@pytest.mark.parametrize("call,message", [
    (lambda m, ids: m(ids, token_type_ids=torch.full_like(ids, 2)), "token_type_ids hold 2, outside [0, 2)"),
    (lambda m, ids: m(ids.float()), "input_ids must be an integer tensor of token ids (torch.long), got torch.float32"),
    (lambda m, ids: m(ids[0]), "input_ids must have shape (batch, sequence), got (7,)"),
    (lambda m, ids: BertModel({"vocab_size": 3}), "should be an instance of class `BertConfig`"),
    (lambda m, ids: BertModel(BertConfig(99, hidden_size=37)), "hidden_size=37 is not a multiple of num_attention_heads=12"),
], ids=["token-type", "float-ids", "1d-ids", "dict-config", "heads"])
def test_tiny_model_refuses_bad_inputs(tiny, call, message):
    model, ids, _, _ = tiny
    with pytest.raises(Exception) as e:
        call(model, ids)
    assert message in str(e.value)


def test_tiny_fine_tuning_heads():
    "Moved from nbs/03_heads.ipynb: shapes, losses and labels of the fine-tuning heads on a tiny config."
    from bert_nb.heads import (BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification,
                               BertForTokenClassification)
    cfg = BertConfig(99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=64)
    B, T = 3, 7
    torch.manual_seed(0)
    ids = torch.randint(0, 99, (B, T))
    tt = torch.zeros_like(ids)
    tt[:, 4:] = 1
    am = torch.ones_like(ids)
    am[0, 5:] = 0
    close = lambda a, b, eps: bool(((a - b).abs() < eps).all())
    torch.manual_seed(0)
    sc = BertForSequenceClassification(cfg, num_labels=3).eval()
    logits = sc(ids, tt, am)
    assert logits.shape == (B, 3)
    assert close(sc(ids, tt, am, labels=torch.tensor([0, 2, 1])), F.cross_entropy(logits, torch.tensor([0, 2, 1])), 1e-6)
    reg = BertForSequenceClassification(cfg, num_labels=1).eval()
    y = torch.tensor([0.5, 4.0, 2.5])
    assert close(reg(ids, tt, am, labels=y), ((reg(ids, tt, am).view(-1) - y) ** 2).mean(), 1e-5)
    mc = BertForMultipleChoice(cfg, num_choices=4).eval()
    choices = torch.randint(0, 99, (B, 4, T))
    assert mc(choices, torch.zeros_like(choices), torch.ones_like(choices)).shape == (B, 4)
    assert close(mc(choices)[1], mc(choices[1:2])[0], 1e-5)       # each row is scored on its own
    tc = BertForTokenClassification(cfg, num_labels=5).eval()
    tl = torch.randint(0, 5, (B, T))
    lg = tc(ids, tt, am)
    assert lg.shape == (B, T, 5)
    assert close(tc(ids, tt, am, labels=tl), F.cross_entropy(lg[am == 1], tl[am == 1]), 1e-5)   # padding not counted
    qa = BertForQuestionAnswering(cfg).eval()
    s, e = qa(ids, tt, am)
    assert (s.shape, e.shape) == ((B, T), (B, T))
    sp, ep = torch.tensor([1, 2, 50]), torch.tensor([3, 4, 50])      # the third answer lies outside: ignored
    expected = (F.cross_entropy(s[:2], sp[:2]) + F.cross_entropy(e[:2], ep[:2])) / 2
    assert close(qa(ids, tt, am, sp, ep), expected, 1e-5)
    assert (sc.config.num_labels, sc.config.architectures) == (3, ["BertForSequenceClassification"])
    assert BertForSequenceClassification(sc.config).num_labels == 3                 # read from the config


@pytest.mark.parametrize("name,extra", [("BertModel", {}), ("BertForPreTraining", {}), ("BertForSequenceClassification", dict(num_labels=3)),
                                        ("BertForTokenClassification", dict(num_labels=3)), ("BertForQuestionAnswering", {})])
def test_default_path_skips_padding_and_agrees_at_real_tokens(name, extra):
    "The default (unpadded) forward equals the padded one at every real token, for every output of the model."
    a, _ = build(name, **extra)  # padded
    ids, tt, mask = batch()
    with torch.no_grad():
        ref = a(ids, tt, mask)
        out = a.set_unpad(True)(ids, tt, mask)
    ref, out = (ref if isinstance(ref, tuple) else (ref,)), (out if isinstance(out, tuple) else (out,))
    for r, o in zip(ref, out):
        if isinstance(r, list): r, o = r[-1], o[-1]
        keep = mask.bool() if r.dim() >= 2 and r.shape[:2] == ids.shape else torch.ones(r.shape[0], dtype=torch.bool)
        assert (r[keep] - o[keep]).abs().max() <= TOL
        if r.dim() == 3 and name == "BertModel": assert o[~mask.bool()].abs().max() == 0  # padding positions: zeros
