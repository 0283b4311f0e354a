"""Every notebook runs top to bottom (its cells are its tests), each in its own process, and the
exported package and the committed notebooks are exactly what nbdev_export / nbdev_clean produce."""
import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))
RUN_FLAGS = {"tf"}  # flagged cells that `make test` runs; slow and gpu cells are run on request


def skip_flags():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    return sorted(set(cfg["DEFAULT"]["tst_flags"].split()) - RUN_FLAGS)


def test_notebooks_found():
    assert {p.stem for p in NOTEBOOKS} >= {"index", "00_tokenizer", "01a_hub", "99_cli"}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(nb):
    code = ("import sys; from nbdev import test as t; from pathlib import Path; "
            f"ok, secs = t.test_nb(Path({str(nb)!r}), skip_flags={skip_flags()!r}); sys.exit(0 if ok else 1)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=nb.parent, timeout=1200)
    assert r.returncode == 0, f"{nb.name} failed:\n{r.stderr[-6000:]}"


def test_export_and_clean_change_nothing(tmp_path):
    "nbdev_export + nbdev_clean on a copy of the committed files reproduce them byte for byte."
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    copy = tmp_path / "repo"
    for f in files:
        if (ROOT / f).is_file():
            (copy / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT / f, copy / f)
    before = {f: (copy / f).read_bytes() for f in files if (copy / f).is_file()}
    bindir = Path(sys.executable).parent
    for cmd in ("nbdev_export", "nbdev_clean"):
        subprocess.run([str(bindir / cmd)], cwd=copy, check=True, capture_output=True)
    changed = [f for f, b in before.items() if (copy / f).read_bytes() != b]
    new = [str(p.relative_to(copy)) for p in (copy / "bert_nb").rglob("*.py") if str(p.relative_to(copy)) not in before]
    assert not changed and not new, f"run `make export` and commit: changed {changed}, new {new}"
