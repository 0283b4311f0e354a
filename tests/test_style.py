"""Lines a reader can follow: ruff over the package (at most 120 characters a line, no `;`-joined statements), and
plumbing that lives once (one module writes files atomically)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_line_length_and_one_statement_a_line():
    "ruff E501 (120) and E702 over bert_nb/; nbdev writes `__all__ = [...` itself (its own wrapping): that line is not ours."
    r = subprocess.run([str(RUFF), "check", "--select", "E501,E702", "--line-length", "120", "--exclude", "bert_nb/_modidx.py",
                        "--output-format", "concise", "--no-cache", "bert_nb"], cwd=ROOT, capture_output=True, text=True)
    bad = []
    for line in r.stdout.splitlines():
        m = re.match(r"(bert_nb/[^:]+):(\d+):\d+: (E\d+)", line)
        if not m: continue
        text = (ROOT / m.group(1)).read_text().splitlines()[int(m.group(2)) - 1]
        if m.group(3) == "E501" and text.startswith("__all__ = ["): continue
        bad.append(line)
    assert not bad, f"{len(bad)} lines to fix in the notebooks (then make export):\n" + "\n".join(bad[:40])


def test_one_module_writes_files_atomically():
    "The temp-file / fsync / rename dance lives in bert_nb.hub (`atomic_open`, `replace_dir`); every other module calls it."
    others = [p.name for p in (ROOT / "bert_nb").glob("*.py")
              if p.name not in ("hub.py", "_modidx.py") and re.search(r"mkstemp|os\.replace\(|os\.fsync\(|_umask", p.read_text())]
    assert not others, f"these modules write files atomically themselves: {others}; use bert_nb.hub"
