"""Every notebook runs top to bottom as JupyterLab's "Run All" runs it: in a fresh `bert_nb` kernel each
(`bert_nb.jupyter`, registered for this Python in a temporary Jupyter folder), in its own folder, offline. The
`tf` cells are opted in (BERT_NB_FLAGS=tf); the other flagged cells print why they are skipped. nbdev_test's own
flags still work, and the exported package and the committed notebooks are exactly what nbdev_export /
nbdev_clean produce."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from bert_nb.jupyter import cell_flags, install_kernel, is_skip_output, project_flags, skip_message, stated_reason

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))
RUN_FLAGS = ["tf"]  # flagged cells that `make test` runs; slow, gpu and net cells are run on request


@pytest.fixture(scope="session")
def bert_nb_kernel(tmp_path_factory):
    "The bert_nb kernel of this Python, in a temporary Jupyter folder on JUPYTER_PATH; the kernel's kernel.json."
    data = tmp_path_factory.mktemp("jupyter") / "share" / "jupyter"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(data))
        spec = install_kernel(prefix=str(data.parents[1]), python=sys.executable)
        yield json.loads((spec / "kernel.json").read_text())


def run_all(path, flags="", **kw):
    """Run every cell of the notebook at `path` in a fresh bert_nb kernel started with BERT_NB_FLAGS=`flags`, in
    the notebook's folder, as Run All does: (the notebook with its outputs, seconds). A failing cell raises
    nbclient's CellExecutionError, which shows the cell and the traceback."""
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "BERT_NB_FLAGS": flags}
    env.pop("IN_TEST", None)
    start = time.monotonic()
    NotebookClient(nb, timeout=1200, kernel_name="bert_nb", resources={"metadata": {"path": str(Path(path).parent)}},
                   **kw).execute(env=env)
    return nb, time.monotonic() - start


def check_skips(nb, run):
    "Each flagged cell of the executed `nb` printed exactly its skip message, unless its flags are all in `run`."
    flags, checked = project_flags(ROOT), 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell_flags(cell.source, flags): continue
        skipped = [f for f in cell_flags(cell.source, flags) if f not in run]
        if skipped:
            want = skip_message(skipped, stated_reason(cell.source, skipped)) + "\n"
            assert is_skip_output(cell.outputs) and cell.outputs[0]["text"] == want, \
                f"cell {i} ({cell.source[:60]!r}) should print only {want!r}, printed {cell.outputs}"
        else:
            assert not is_skip_output(cell.outputs), f"cell {i} ({cell.source[:60]!r}) is opted in but was skipped"
        checked += 1
    return checked


def test_notebooks_found():
    assert {p.stem for p in NOTEBOOKS} >= {"index", "00_tokenizer", "01a_hub", "13_jupyter", "99_cli"}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(nb, bert_nb_kernel):
    executed, secs = run_all(nb, " ".join(RUN_FLAGS))
    n = check_skips(executed, RUN_FLAGS)
    print(f"{nb.stem}: Run All in {secs:.1f} s, {n} flagged cells")


def test_nbdev_test_flags(tmp_path):
    "`nbdev_test` still skips flagged cells itself and runs those `--flags` names (the bert_nb kernel plays no part)."
    shutil.copy(ROOT / "settings.ini", tmp_path / "settings.ini")
    (tmp_path / "nbs").mkdir()
    cells = ["from pathlib import Path", "Path('plain.ran').touch()", "#| slow\nPath('slow.ran').touch()",
             "#| tf\nPath('tf.ran').touch()", "#| eval: false\nPath('eval.ran').touch()"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]),
                   tmp_path / "nbs" / "flags.ipynb")
    ran = {}
    for flags in ("", "slow"):
        for f in (tmp_path / "nbs").glob("*.ran"): f.unlink()
        r = subprocess.run([str(Path(sys.executable).parent / "nbdev_test"), "--path", "nbs/flags.ipynb",
                            "--flags", flags], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "Success." in r.stdout, r.stderr[-3000:]
        ran[flags] = sorted(f.stem for f in (tmp_path / "nbs").glob("*.ran"))
    assert ran == {"": ["plain"], "slow": ["plain", "slow"]}


def test_export_and_clean_change_nothing(tmp_path):
    "nbdev_export + nbdev_clean on a copy of the committed files reproduce them byte for byte."
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    copy = tmp_path / "repo"
    for f in files:
        if (ROOT / f).is_file():
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, copy / f)
    before = {f: (copy / f).read_bytes() for f in files if (copy / f).is_file()}
    bindir = Path(sys.executable).parent
    for cmd in ("nbdev_export", "nbdev_clean"):
        subprocess.run([str(bindir / cmd)], cwd=copy, check=True, capture_output=True)
    changed = [f for f, b in before.items() if (copy / f).read_bytes() != b]
    new = [str(p.relative_to(copy)) for p in (copy / "bert_nb").rglob("*.py") if str(p.relative_to(copy)) not in before]
    assert not changed and not new, f"run `make export` and commit: changed {changed}, new {new}"
