"""What a reader meets first: the landing page's headline figures, and the documentation of every model's `forward`.

The notebooks are read from disk with their saved outputs (the site shows exactly those)."""
import inspect, json, re, sys
from pathlib import Path

import pytest
from fastcore.docments import docments

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
MODELS = {"02_model": ["BertModel"],
          "03_heads": ["BertForPreTraining", "BertForMaskedLM", "BertForNextSentencePrediction",
                       "BertForSequenceClassification", "BertForMultipleChoice", "BertForTokenClassification",
                       "BertForQuestionAnswering"]}
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e-?\d+)?|(?<![\w.])\d+(?:\.\d+)?e-?\d+")


def cells(name):
    return json.loads((NBS / f"{name}.ipynb").read_text())["cells"]


def outputs_text(cell):
    "Every text a code cell's saved outputs show (streams, plain text, markdown, HTML)."
    parts = []
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", "")))
        for kind in ("text/plain", "text/markdown", "text/html"): parts.append("".join(o.get("data", {}).get(kind, "")))
    return "\n".join(parts)


def results_table():
    "The rows of index.ipynb's 'Results at a glance' table: (what, result, notebook, anchor)."
    md = next("".join(c["source"]) for c in cells("index") if "## Results at a glance" in "".join(c["source"]))
    rows = [l for l in md.splitlines() if l.startswith("|") and not l.startswith(("| what", "|---"))]
    out = []
    for r in rows:
        what, result, proof = [s.strip() for s in r.strip("|").split("|")]
        m = re.search(r"\]\((\w+)\.ipynb(?:#([\w-]+))?\)", proof)
        assert m, f"the row {what!r} does not link to a notebook: {proof}"
        out.append((what, result, m.group(1), m.group(2)))
    return out


def anchors(heading):
    "The anchors a link may use for `heading`: Quarto's (Pandoc's) id and the site's (docutils'); the site maps both."
    sys.path.insert(0, str(ROOT / "docs"))
    from build_site import pandoc_id
    from docutils.nodes import make_id
    return {pandoc_id(heading), make_id(heading)}


def test_results_table_has_the_headline_results():
    whats = " ".join(w.lower() for w, *_ in results_table())
    for topic in ("tensorflow", "pytorch-pretrained-bert", "transformers", "fine-tuning", "question answering",
                  "named entities", "pre-training", "speed"):
        assert topic in whats, f"'Results at a glance' has no row on {topic}"


@pytest.mark.parametrize("row", results_table(), ids=lambda r: r[0])
def test_each_headline_figure_is_on_the_page_it_links_to(row):
    "Every decimal figure of a row is shown by the linked notebook, in a saved output or a table of measurements."
    what, result, nb, anchor = row
    assert (NBS / f"{nb}.ipynb").exists(), f"{what}: links to {nb}.ipynb, which does not exist"
    cs = cells(nb)
    if anchor:
        heads = [a for c in cs if c["cell_type"] == "markdown"
                 for h in re.findall(r"^#+\s+(.*)$", "".join(c["source"]), re.M) for a in anchors(h)]
        assert anchor in heads, f"{what}: {nb} has no heading with the anchor #{anchor} (it has {heads})"
    tables = ["\n".join(l for l in "".join(c["source"]).splitlines() if l.startswith("|")) for c in cs
              if c["cell_type"] == "markdown"]  # benchmarks' results are pasted as tables
    shown = [float(x) for t in tables + [outputs_text(c) for c in cs] for x in NUMBER.findall(t)]
    for figure in NUMBER.findall(result):
        f = float(figure)
        decimals = len(figure.split("e")[0].partition(".")[2])
        near = [s for s in shown if abs(s - f) <= 0.5 * 10 ** -decimals * (10 ** int(figure.split("e")[1])
                                                                           if "e" in figure else 1) + 1e-12]
        assert near, f"{what}: {figure} is not shown on {nb} (no number there rounds to it)"


@pytest.mark.parametrize("nb,name", [(nb, n) for nb, ns in MODELS.items() for n in ns])
def test_every_model_documents_forward(nb, name):
    "Each model has a show_doc of its forward, with a saved output, and every input is described, as is the return."
    import bert_nb.heads, bert_nb.modeling
    cls = getattr(bert_nb.heads, name, None) or getattr(bert_nb.modeling, name)
    fwd = cls.forward
    assert inspect.getdoc(fwd) and "Call self" not in inspect.getdoc(fwd), f"{name}.forward has no docstring"
    params = [p for p in inspect.signature(fwd).parameters if p != "self"]
    missing = [p for p, d in docments(fwd).items() if p in params and not d]
    assert not missing, f"{name}.forward: no comment describing {missing}"
    doc = [c for c in cells(nb) if c["cell_type"] == "code" and f"show_doc({name}.forward)" in "".join(c["source"])]
    assert doc, f"{nb} has no show_doc({name}.forward) cell"
    shown = outputs_text(doc[0])
    assert f"{name}.forward" in shown and all(p in shown for p in params), f"show_doc({name}.forward) has no saved output"
