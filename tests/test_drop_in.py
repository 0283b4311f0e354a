"""Drop-in: pytorch-pretrained-bert's module paths and idioms work with the package renamed to bert_nb, and the folders
bert_nb writes load in transformers' Auto classes (and the reverse) with the same outputs."""
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bert_nb
from bert_nb.config import BertConfig
from bert_nb.demo import DEMO_DATA_DIR
from bert_nb.drop_in import SEED_MODULES, seed_names
from bert_nb.hub import minilm_dir

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)
HEADS = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForNextSentencePrediction",
         "BertForSequenceClassification", "BertForMultipleChoice", "BertForTokenClassification", "BertForQuestionAnswering"]


# ---- 1. the names ----

def test_the_walker_finds_bert_names_and_skips_the_rest():
    modeling = seed_names("modeling")
    assert {"BertForSequenceClassification", "PRETRAINED_MODEL_ARCHIVE_MAP", "load_tf_weights_in_bert",
            "WEIGHTS_NAME", "BertConfig", "cached_path", "gelu"} <= set(modeling)
    assert not {"os", "torch", "CrossEntropyLoss", "json", "logging"} & set(modeling)
    top = seed_names("")
    assert "BertAdam" in top and "PYTORCH_PRETRAINED_BERT_CACHE" in top
    assert not [n for n in top if "GPT" in n or "TransfoXL" in n or "OpenAI" in n]
    assert {"ConstantLR", "WarmupLinearSchedule", "SCHEDULES"} <= set(seed_names("optimization"))
    assert {"Optimizer", "required", "ABC"}.isdisjoint(seed_names("optimization"))
    assert {"cached_path", "get_from_cache", "http_get", "s3_etag", "url_to_filename"} <= set(seed_names("file_utils"))


@pytest.mark.parametrize("module", SEED_MODULES, ids=[m or "package" for m in SEED_MODULES])
def test_every_seed_name_is_in_the_bert_nb_module_of_the_same_path(module):
    ours = importlib.import_module("bert_nb" + (f".{module}" if module else ""))
    missing = [n for n in seed_names(module) if not hasattr(ours, n)]
    assert not missing, f"{ours.__name__} lacks pytorch-pretrained-bert's {missing}"


@pytest.mark.parametrize("module", SEED_MODULES, ids=[m or "package" for m in SEED_MODULES])
def test_values_are_the_seeds(module):
    seed = importlib.import_module("pytorch_pretrained_bert" + (f".{module}" if module else ""))
    ours = importlib.import_module("bert_nb" + (f".{module}" if module else ""))
    for n in seed_names(module):
        v = getattr(seed, n)
        if isinstance(v, (str, int)): assert getattr(ours, n) == v, n
        elif isinstance(v, dict): assert set(getattr(ours, n)) >= set(v), n  # the same shortcut names (and more)
        elif isinstance(v, type): assert isinstance(getattr(ours, n), type), n
        elif callable(v): assert callable(getattr(ours, n)), n


def test_modeling_answers_heads_without_an_import_cycle():
    for first in ("bert_nb.heads", "bert_nb.modeling", "bert_nb.convert"):
        code = (f"import {first}; from bert_nb.modeling import BertForQuestionAnswering, load_tf_weights_in_bert; "
                "from bert_nb.heads import BertForQuestionAnswering as Q; assert Q is BertForQuestionAnswering; "
                "from bert_nb.modeling import *; assert BertForMaskedLM; import sys; assert 'tensorflow' not in sys.modules")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    with pytest.raises(AttributeError, match="has no attribute 'BertForNothing'"):
        importlib.import_module("bert_nb.modeling").BertForNothing


def test_cache_folder_follows_the_seeds_environment_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BERT_NB_CACHE"}
    code = "import bert_nb.file_utils as f, bert_nb; print(f.PYTORCH_PRETRAINED_BERT_CACHE, bert_nb.PYTORCH_PRETRAINED_BERT_CACHE)"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTORCH_PRETRAINED_BERT_CACHE": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(tmp_path)] * 2


def test_weights_url_of_the_archive_map_loads(tmp_path):
    "PRETRAINED_MODEL_ARCHIVE_MAP's values are weights URLs on the hub; from_pretrained takes one (its config lies beside it)."
    from bert_nb.hub import hub_url, serve_directory
    from bert_nb.modeling import PRETRAINED_MODEL_ARCHIVE_MAP, BertModel
    if not os.environ.get("BERT_NB_ENDPOINT"):
        assert PRETRAINED_MODEL_ARCHIVE_MAP["bert-base-uncased"] == hub_url("bert-base-uncased", "model.safetensors")
    m = BertModel(BertConfig(99, **TINY))
    m.save_pretrained(tmp_path / "saved")
    with serve_directory(tmp_path / "hub") as hub:
        for f in ("config.json", "model.safetensors"):
            url = hub.add("bert-base-uncased", f, (tmp_path / "saved" / f).read_bytes())
        again = BertModel.from_pretrained(url, cache_dir=tmp_path / "cache")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))


# ---- 2. the idioms ----

def test_config_is_made_as_the_seed_made_it_and_the_model_refuses_it():
    config = BertConfig(vocab_size_or_config_json_file=99, hidden_size=37)
    obj = json.loads(config.to_json_string())
    assert (obj["vocab_size"], obj["hidden_size"]) == (99, 37)
    with pytest.raises(ValueError, match="hidden_size=37 is not a multiple of num_attention_heads=12"):
        bert_nb.BertModel(config)
    assert BertConfig(vocab_size=99).vocab_size == 99  # transformers' spelling
    with pytest.raises(TypeError, match="unknown keyword argument 'hiden_size'; did you mean 'hidden_size'"):
        BertConfig(99, hiden_size=32)


def test_config_file_errors_name_the_file_and_field(tmp_path, caplog):
    bad = tmp_path / "bert_config.json"
    bad.write_text(json.dumps({"vocab_size": 99, "hidden_size": 30, "num_hidden_layers": 1, "num_attention_heads": 4,
                               "intermediate_size": 8}))
    config = BertConfig.from_json_file(bad)  # read as pytorch-pretrained-bert read it
    with pytest.raises(ValueError, match=f"{bad}: hidden_size=30 is not a multiple"):
        bert_nb.BertModel(config)


@pytest.mark.parametrize("name", HEADS)
def test_same_random_seed_gives_the_seeds_weights(name):
    import pytorch_pretrained_bert.modeling as seed
    kw = {"BertForSequenceClassification": dict(num_labels=3), "BertForTokenClassification": dict(num_labels=3),
          "BertForMultipleChoice": dict(num_choices=2)}.get(name, {})
    sds = []
    for mod in (seed, importlib.import_module("bert_nb.modeling")):
        torch.manual_seed(0)
        sds.append(getattr(mod, name)(mod.BertConfig(99, **TINY), **kw).state_dict())
    assert list(sds[0]) == list(sds[1])
    assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory):
    "A small random BERT saved the way pytorch-pretrained-bert reads it: config.json, pytorch_model.bin, vocab.txt."
    d = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    cfg = BertConfig(30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     attention_probs_dropout_prob=0.0)  # SDPA draws its dropout mask in-kernel: no common random stream
    m = bert_nb.BertForPreTraining(cfg)
    torch.save(m.state_dict(), d / "pytorch_model.bin")
    m.config.to_json_file(d / "config.json")
    shutil.copy(minilm_dir() / "vocab.txt", d / "vocab.txt")
    return d


def _run_script(script, model_dir, out):
    flags = ["--data_dir", str(DEMO_DATA_DIR), "--bert_model", str(model_dir), "--output_dir", str(out),
             "--do_train", "--do_eval", "--do_lower_case", "--max_examples", "96", "--max_seq_length", "32",
             "--train_batch_size", "8", "--learning_rate", "1e-3", "--num_train_epochs", "1"]
    r = subprocess.run([sys.executable, str(script), *flags], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_seed_style_script_runs_unchanged_and_equals_the_seed(tiny_pretrained, tmp_path):
    "A script in pytorch-pretrained-bert's manner (its imports, BertAdam, the by-hand save and reload) gives the numbers "
    "it gives on pytorch-pretrained-bert itself."
    script = ROOT / "tests" / "seed_style" / "paraphrase_classifier.py"
    renamed = tmp_path / "paraphrase_classifier_seed.py"
    renamed.write_text(script.read_text().replace("bert_nb", "pytorch_pretrained_bert"))
    ours, seeds = _run_script(script, tiny_pretrained, tmp_path / "ours"), _run_script(renamed, tiny_pretrained, tmp_path / "seed")
    assert ours["global_step"] == seeds["global_step"] == 12
    assert ours["saved"] == seeds["saved"] == ["config.json", "pytorch_model.bin", "vocab.txt"]
    assert max(abs(a - b) for a, b in zip(ours["losses"], seeds["losses"])) < 1e-5
    assert ours["lrs"] == seeds["lrs"] and ours["lrs"][0] < ours["lrs"][1]  # WarmupLinearSchedule: warming up
    assert torch.allclose(torch.tensor(ours["logits"]), torch.tensor(seeds["logits"]), atol=1e-5)
    assert ours["logits"] == ours["in_memory_logits"]  # the reloaded model is the trained one, bit for bit
    assert ours["acc"] == seeds["acc"]
    assert ours["half_agreement"] == 1.0 and ours["half_max_diff"] < 1e-2  # model.half() inference
    assert ours["config"]["architectures"] == ["BertForSequenceClassification"] and ours["config"]["num_labels"] == 2
    assert (tmp_path / "ours" / "eval_results.txt").read_text().startswith("acc = ")


def test_seed_style_folder_loads_in_transformers(tiny_pretrained, tmp_path):
    "The by-hand save (torch.save of the state dict, config.to_json_file) is a folder transformers reads."
    transformers = pytest.importorskip("transformers")
    model = bert_nb.BertForSequenceClassification.from_pretrained(tiny_pretrained, num_labels=3).eval()
    torch.save(model.state_dict(), tmp_path / bert_nb.WEIGHTS_NAME)
    model.config.to_json_file(tmp_path / bert_nb.CONFIG_NAME)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 30522, (2, 9))
    with torch.no_grad(): assert torch.allclose(hf(input_ids=ids).logits, model(ids), atol=1e-5)


# ---- 3. transformers, both ways ----

def _inputs(name):
    torch.manual_seed(1)
    ids = torch.randint(1, 99, (3, 7))
    tt, am = torch.zeros_like(ids), torch.ones_like(ids)
    tt[:, 4:], am[0, 5:] = 1, 0
    if name == "BertForMultipleChoice": return tuple(t[:, None].expand(3, 4, 7).contiguous() for t in (ids, tt, am))
    return ids, tt, am


def _outputs(model, x, name):
    "Our outputs as a tuple, padding positions of token-level outputs dropped."
    with torch.no_grad(): o = model(*x)
    if name == "BertModel": o = (o[0][-1], o[1])
    o = o if isinstance(o, tuple) else (o,)
    return tuple(t[x[2] == 1] if t.dim() >= 2 and t.shape[:2] == x[0].shape else t for t in o)


def _hf_outputs(model, x, name):
    with torch.no_grad(): h = model(input_ids=x[0], token_type_ids=x[1], attention_mask=x[2])
    vals = (h.last_hidden_state, h.pooler_output) if name == "BertModel" else \
        tuple(v for k, v in h.items() if k.endswith("logits"))
    return tuple(t[x[2] == 1] if t.dim() >= 2 and t.shape[:2] == x[0].shape else t for t in vals)


AUTO = {"BertModel": "AutoModel", "BertForPreTraining": "AutoModelForPreTraining", "BertForMaskedLM": "AutoModelForMaskedLM",
        "BertForNextSentencePrediction": "AutoModelForNextSentencePrediction",
        "BertForSequenceClassification": "AutoModelForSequenceClassification",
        "BertForMultipleChoice": "AutoModelForMultipleChoice", "BertForTokenClassification": "AutoModelForTokenClassification",
        "BertForQuestionAnswering": "AutoModelForQuestionAnswering"}


@pytest.mark.parametrize("name", HEADS)
def test_round_trip_through_transformers(name, tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    cls = getattr(bert_nb, name)
    kw = {"BertForSequenceClassification": dict(num_labels=3), "BertForTokenClassification": dict(num_labels=5)}.get(name, {})
    torch.manual_seed(0)
    ours = cls(BertConfig(99, **TINY), **kw).eval()
    x = _inputs(name)
    ours.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["architectures"] == [name] and saved["model_type"] == "bert"
    hf = getattr(transformers, AUTO[name]).from_pretrained(tmp_path / "ours").eval()  # the folder, nothing more
    assert type(hf).__name__ == name
    for a, b in zip(_outputs(ours, x, name), _hf_outputs(hf, x, name), strict=True):
        assert (a - b).abs().max() <= 1e-5
    hf.save_pretrained(tmp_path / "hf")
    back = cls.from_pretrained(tmp_path / "hf").eval()  # no num_labels: read from transformers' config
    assert getattr(back, "num_labels", None) == getattr(ours, "num_labels", None)
    for a, b in zip(_outputs(ours, x, name), _outputs(back, x, name), strict=True):
        assert (a - b).abs().max() <= 1e-5


def test_label_names_and_explicit_num_labels(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=37, id2label={0: "neg", 1: "neutral", 2: "pos"})
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path / "clf")
    m = bert_nb.BertForSequenceClassification.from_pretrained(tmp_path / "clf")
    assert (m.num_labels, m.config.id2label) == (3, {"0": "neg", "1": "neutral", "2": "pos"})
    transformers.BertModel(cfg).save_pretrained(tmp_path / "base")
    assert bert_nb.BertForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=4).num_labels == 4


def test_run_classifier_folder_carries_the_task_labels(tmp_path):
    transformers = pytest.importorskip("transformers")
    from bert_nb.cli import main
    out = tmp_path / "mrpc"
    rc = main(["run_classifier", "--task_name", "MRPC", "--data_dir", str(DEMO_DATA_DIR), "--bert_model",
               str(minilm_dir()), "--output_dir", str(out), "--do_train", "--do_lower_case", "--max_seq_length", "32",
               "--train_batch_size", "4", "--max_steps", "1", "--no_progress", "--no_plot"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["architectures"], cfg["num_labels"], cfg["id2label"]) == (["BertForSequenceClassification"], 2, {"0": "0", "1": "1"})
    assert transformers.AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 2


# ---- 4. the command line ----

def _cli(*args, env=None):
    return subprocess.run([str(BIN / "bert_nb"), *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=ROOT, timeout=300)


def _one_line_error(r, code, *contains):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [l for l in r.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1 and errors[0] == r.stderr.splitlines()[-1], r.stderr
    for c in contains: assert c in errors[0], (c, errors[0])


def test_cli_user_errors_are_one_line(tmp_path):
    data, mini = str(DEMO_DATA_DIR), str(minilm_dir())
    common = ["--output_dir", str(tmp_path / "o"), "--do_eval", "--do_lower_case"]
    _one_line_error(_cli("run_classifier", "--task_name", "NOPE", "--data_dir", data, "--bert_model", mini, *common), 1,
                    "bert_nb run_classifier: error:", "'NOPE'", "mrpc")
    _one_line_error(_cli("run_classifier", "--task_name", "MRPC", "--data_dir", str(tmp_path / "none"), "--bert_model", mini,
                         *common), 1, "none is not a directory")
    _one_line_error(_cli("run_classifier", "--task_name", "MRPC", "--data_dir", data, "--bert_model",
                         str(tmp_path / "no_model"), *common), 1, "no_model")
    _one_line_error(_cli("run_classifier", "--task_name", "MRPC", "--data_dir", data, "--bert_model", mini, *common,
                         "--max_seq_length", "-5"), 2, "--max_seq_length", "-5 is not a positive integer")
    _one_line_error(_cli("run_squad", "--bert_model", mini, "--output_dir", str(tmp_path / "q"), "--do_train",
                         "--train_file", str(tmp_path / "missing.json")), 1, "missing.json")
    _one_line_error(_cli("tokenize", str(tmp_path / "absent.txt")), 1, "absent.txt")
    offline = _cli("run_classifier", "--task_name", "MRPC", "--data_dir", data, "--bert_model", "bert-base-uncased", *common,
                   env={"BERT_NB_OFFLINE": "1", "BERT_NB_CACHE": str(tmp_path / "empty_cache")})
    _one_line_error(offline, 1, "offline", "nothing for it is cached")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing half-written


def test_cli_debug_shows_the_traceback(tmp_path):
    args = ["tokenize", str(tmp_path / "absent.txt")]
    assert "Traceback" in _cli("--debug", *args).stderr
    assert "Traceback" in _cli(*args, "--debug").stderr
    assert "Traceback" in _cli(*args, env={"BERT_NB_DEBUG": "1"}).stderr


def test_cli_help_lists_the_seeds_examples_first():
    out = _cli("--help").stdout
    order = [n for n in ("run_classifier", "run_squad", "run_swag", "extract_features", "run_ner", "demo") if n in out]
    assert [out.index(f"    {n}") for n in order] == sorted(out.index(f"    {n}") for n in order) and len(order) == 6


def test_matplotlib_is_a_runtime_requirement():
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    assert "matplotlib" in cfg["DEFAULT"]["requirements"].split()
