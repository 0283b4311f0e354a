"""JupyterLab as a way into bert_nb (`make lab`, `bert_nb.jupyter`): the bert_nb kernel skips flagged cells saying
why and runs them when asked; Run All with no opt-ins completes; saves through a real Jupyter server are cleaned,
keep the skipped cells' outputs and re-export the module; JupyterLab shows a notebook in headless Chromium."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from bert_nb.jupyter import KERNEL_NAME, cell_flags, lab_command, skip_message
from test_notebooks import NOTEBOOKS, ROOT, RUN_FLAGS, bert_nb_kernel, check_skips, run_all  # noqa: F401

BIN = Path(sys.executable).parent


def outputs_text(cell):
    "What a cell printed or returned, as text."
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") or "\n".join(o.get("traceback", []))
                   for o in cell.outputs)


def test_kernelspec_is_the_notebooks(bert_nb_kernel):
    "The kernel runs this Python with the extension, and is the kernel every notebook names (so saving keeps it)."
    assert bert_nb_kernel["argv"][0] == sys.executable
    assert "--ext=bert_nb.jupyter" in bert_nb_kernel["argv"]
    want = {"name": KERNEL_NAME, "display_name": bert_nb_kernel["display_name"], "language": bert_nb_kernel["language"]}
    wrong = [nb.name for nb in NOTEBOOKS if json.loads(nb.read_text())["metadata"].get("kernelspec") != want]
    assert not wrong, f"these notebooks do not name the {want} kernel: {wrong}"


def test_kernel_skips_flagged_cells_and_opts_in(bert_nb_kernel, tmp_path):
    cells = ["#| net\n# net: fetches a file\nfetched = 1",          # 0 skipped, its own reason
             "print(globals().get('fetched'))",                    # 1 ... so the name is not defined
             "#| tf\nprint('tf ran')",                             # 2 opted in at start (BERT_NB_FLAGS=tf)
             "#| slow\n#| gpu\nprint('slow gpu ran')",             # 3 skipped for both
             "%bert_nb_flags net",                                 # 4 opt in, in the running kernel
             "#| net\nfetched = 2\nprint(fetched)",                # 5 runs now
             "#| eval: false\nprint('shown')",                     # 6 skipped
             "%bert_nb_flags -net eval",                           # 7
             "#| net\nprint('net again')",                         # 8 skipped again
             "#| eval: false\nprint('shown')",                     # 9 runs
             "%unload_ext bert_nb.jupyter",                        # 10 without the extension: plain IPython
             "#| slow\nprint('plain ipython')",                    # 11 runs
             "%load_ext bert_nb.jupyter",                          # 12
             "%bert_nb_flags tpu"]                                 # 13 a mistake, named
    path = tmp_path / "flags.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    nb, _ = run_all(path, "tf", allow_errors=True)
    out = [outputs_text(c) for c in nb.cells]
    assert out[0] == skip_message(["net"], "fetches a file") + "\n"
    assert out[1] == "None\n" and out[2] == "tf ran\n"
    assert out[3] == skip_message(["slow", "gpu"]) + "\n"
    assert out[3].startswith("Skipped (#| slow, #| gpu): takes minutes and needs a CUDA GPU. To run it:")
    assert out[4] == "bert_nb runs the cells flagged: tf net; skips: notest slow gpu eval\n"
    assert out[5] == "2\n"
    assert out[6] == skip_message(["eval"]) + "\n"
    assert out[7] == "bert_nb runs the cells flagged: tf eval; skips: notest slow gpu net\n"
    assert out[8] == skip_message(["net"]) + "\n" and out[9] == "shown\n" and out[11] == "plain ipython\n"
    assert out[13].startswith("UsageError: unknown flag 'tpu': the cell flags are notest slow tf gpu net eval"), out[13]


def test_plain_ipython_kernel_runs_flagged_cells(bert_nb_kernel, tmp_path):
    "In ipykernel's own kernel, importing bert_nb.jupyter changes nothing: the extension acts only when loaded."
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in
                                         ["import bert_nb.jupyter", "#| net\nprint('ran')"]])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert outputs_text(nb.cells[1]) == "ran\n"


def notebooks_with(flags):
    "The notebooks that have cells flagged with one of `flags`."
    return [p for p in NOTEBOOKS if any(set(flags) & set(cell_flags(c.source, flags))
                                        for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")]


@pytest.mark.parametrize("nb", notebooks_with(RUN_FLAGS), ids=lambda p: p.stem)
def test_run_all_without_opt_ins(nb, bert_nb_kernel):
    """A reader's Run All: no flag opted in. (test_notebooks runs every notebook with the `tf` cells opted in; these
    are the notebooks whose runs differ without them: no later cell may need what a skipped cell defines.)"""
    executed, secs = run_all(nb, "")
    n = check_skips(executed, [])
    print(f"{nb.stem}: Run All in {secs:.1f} s, {n} flagged cells skipped")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_repo(dest):
    "The repository's files (committed or not, ignored ones left out) copied to `dest`."
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


@pytest.fixture(scope="module")
def lab(bert_nb_kernel, tmp_path_factory):
    """`jupyter lab` as `make lab` starts it, serving a copy of the repository on 127.0.0.1 (no token, no browser,
    nothing fetched from the network): (its base URL, the copy)."""
    repo = copy_repo(tmp_path_factory.mktemp("lab") / "repo")
    port, home = free_port(), tmp_path_factory.mktemp("jupyter_home")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    # JupyterLab attaches only the cells in view by default; the browser test looks at all of them
    tracker = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    tracker /= "tracker.jupyterlab-settings"
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    news = tracker.parent.parent / "apputils-extension"
    news.mkdir()
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))  # no news prompt
    cmd = lab_command(["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                       "--IdentityProvider.token=", "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=None",
                       "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"], root=str(repo))
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    url, end = f"http://127.0.0.1:{port}/", time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "api/status", timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                proc.kill()
                pytest.fail(f"jupyter lab did not start:\n{(home / 'server.log').read_text()[-4000:]}")
            time.sleep(0.5)
    yield url, repo
    proc.terminate()
    try: proc.wait(30)
    except subprocess.TimeoutExpired: proc.kill()
    log.close()


def put_notebook(url, path, nb):
    "Save `nb` at `path` through the server's contents API, as JupyterLab's Save does."
    body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
    req = urllib.request.Request(url + "api/contents/" + path, data=body, method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r: return json.load(r)


def is_clean(path, tmp_path):
    "Whether nbdev_clean leaves the notebook at `path` as it is."
    shutil.copy(path, tmp_path / path.name)
    subprocess.run([str(BIN / "nbdev_clean"), "--fname", str(tmp_path / path.name)], cwd=path.parent, check=True,
                   capture_output=True)
    return (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_save_after_run_all_keeps_the_notebook_clean(lab, tmp_path):
    url, repo = lab
    path = repo / "nbs" / "09_tf_parity.ipynb"  # its `tf` cells keep their outputs (a figure among them)
    before = nbformat.read(path, as_version=4)
    flagged = [i for i, c in enumerate(before.cells) if c.cell_type == "code" and cell_flags(c.source, ["tf"])]
    assert flagged and all(before.cells[i].outputs for i in flagged), "09_tf_parity should keep its tf cells' outputs"
    nb, _ = run_all(path, "")
    assert check_skips(nb, []) == len(flagged)
    nb.cells[0].metadata.update(scrolled=True, execution={"iopub.status.busy": "2026-01-01T00:00:00Z"})
    put_notebook(url, "nbs/09_tf_parity.ipynb", nb)
    saved = json.loads(path.read_text())
    assert saved["metadata"] == {"kernelspec": {"display_name": "bert_nb", "language": "python", "name": "bert_nb"}}
    assert all(c["metadata"] == {} for c in saved["cells"])
    counts = [c.get("execution_count") for c in saved["cells"]] + \
             [o.get("execution_count") for c in saved["cells"] for o in c.get("outputs", [])]
    assert set(counts) <= {None}, "execution counts were saved"
    after = nbformat.read(path, as_version=4)
    for o in [o for i in flagged for o in before.cells[i].outputs if "execution_count" in o]: o.execution_count = None
    for i in flagged: assert after.cells[i].outputs == before.cells[i].outputs, f"cell {i} lost its outputs"
    ran = [c for i, c in enumerate(saved["cells"]) if c["cell_type"] == "code" and c["outputs"] and i not in flagged]
    assert ran, "the outputs of Run All were not saved"
    assert is_clean(path, tmp_path), "the saved notebook is not what nbdev_clean makes of it"
    assert not (repo / "nbs" / ".last_checked").exists()


def test_save_exports_the_module(lab):
    url, repo = lab
    path, module = repo / "nbs" / "01c_file_utils.ipynb", repo / "bert_nb" / "file_utils.py"
    files = lambda: {str(p.relative_to(repo)): p.read_bytes() for p in [*repo.glob("bert_nb/*.py"),
                                                                          *repo.glob("nbs/*.ipynb")]}
    nb, unsaved = nbformat.read(path, as_version=4), files()
    source = '#| export\ndef saved_in_lab():\n    "Saved in JupyterLab."\n    return 1'
    nb.cells.append(nbformat.v4.new_code_cell(source, id="5a7ed1ab"))
    put_notebook(url, "nbs/01c_file_utils.ipynb", nb)
    text = module.read_text()
    all_names = re.search(r"^__all__ = \[.*?\]", text, re.S | re.M).group(0)
    assert "def saved_in_lab():" in text and "'saved_in_lab'" in all_names, "the module was not exported"
    saved = files()
    changed = sorted(f for f, b in saved.items() if unsaved[f] != b)
    assert changed == ["bert_nb/_modidx.py", "bert_nb/file_utils.py", "nbs/01c_file_utils.ipynb"], changed
    for cmd in ("nbdev_export", "nbdev_clean"):
        subprocess.run([str(BIN / cmd)], cwd=repo, check=True, capture_output=True)
    again = [f for f, b in files().items() if f in changed and b != saved[f]]
    assert not again, f"after a save, `make export` would still change {again}"


def test_jupyterlab_shows_a_notebook(lab, tmp_path):
    "02_model in JupyterLab, in headless Chromium: headings rendered from markdown, code cells, a figure, the kernel."
    browser = pytest.importorskip("browser", reason="tests/browser.py (the CDP client) is missing")
    if not browser.CHROMIUM: pytest.skip("chromium is not installed (`make test` installs it with apt-get when root)")
    url, repo = lab
    with browser.Browser(timeout=60) as b:
        b.width(1400, 1000)
        b.goto(url + "lab/tree/nbs/02_model.ipynb", settle=1)
        b.wait_for("document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length > 10", timeout=90)
        b.wait_for("!!document.querySelector('.jp-NotebookPanel .jp-RenderedMarkdown h1')", timeout=30)
        b.wait_for("document.querySelector('.jp-NotebookPanel-toolbar .jp-Toolbar-kernelName').textContent.trim()"
                   " === 'bert_nb'", timeout=60)  # the kernel the notebook names, started
        page = b.js("""(() => { const nb = document.querySelector('.jp-NotebookPanel');
            const text = e => e.textContent.replace('¶', '').trim();
            return {h1: [...nb.querySelectorAll('.jp-RenderedMarkdown h1')].map(text),
                    h2: nb.querySelectorAll('.jp-RenderedMarkdown h2').length,
                    code: nb.querySelectorAll('.jp-CodeCell').length,
                    images: [...nb.querySelectorAll('.jp-RenderedImage img')].map(i => i.src.slice(0, 22)),
                    kernel: text(document.querySelector('.jp-NotebookPanel-toolbar .jp-Toolbar-kernelName')),
                    text: nb.innerText} })()""")
        shot = b.screenshot(tmp_path / "jupyterlab.png")
        b.js("document.querySelector('.jp-NotebookPanel .jp-RenderedImage img').scrollIntoView({block: 'center'})")
        time.sleep(0.5)
        b.screenshot(tmp_path / "jupyterlab_figure.png")
    text = page.pop("text")
    cells = nbformat.read(repo / "nbs" / "02_model.ipynb", as_version=4).cells
    title = next(c.source.splitlines()[0] for c in cells if c.cell_type == "markdown" and c.source.startswith("# "))
    assert page["h1"] == [title[2:]] and page["h2"] >= 2, page
    assert title not in text, "the markdown is shown as source, not rendered"
    assert page["code"] == sum(c.cell_type == "code" for c in cells), page
    assert page["images"] and all(s.startswith("data:image/png;base64") for s in page["images"]), page
    assert page["kernel"] == "bert_nb", page
    from PIL import Image
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the screenshot is (nearly) one colour"
