"""A real English corpus that every machine with Python has: the Python documentation.

`english_corpus()` returns lines of text from the pydoc topic pages shipped with CPython
(`pydoc_data.topics`, the language reference) and the docstrings of the standard library's
modules, classes and functions, read in sorted path order, so the same Python gives the same
corpus. Used by the tokenizer benchmark and the tokenizer parity tests.
"""
import ast
import os
import sysconfig
import warnings


def _docstrings(path):
    "Every docstring in one Python source file."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(open(path, encoding="utf-8").read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return [d for d in map(ast.get_docstring, nodes) if d]


def english_corpus(max_bytes=5_000_000):
    "Non-empty lines of Python's documentation, about `max_bytes` of UTF-8 in all."
    import pydoc_data.topics
    texts = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    stdlib = sysconfig.get_paths()["stdlib"]
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "idle_test", "site-packages", "__pycache__"))
        texts += [d for f in sorted(files) if f.endswith(".py") for d in _docstrings(os.path.join(root, f))]
    lines, size = [], 0
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if not line: continue
            lines.append(line)
            size += len(line.encode("utf-8")) + 1
            if size >= max_bytes: return lines
    return lines


if __name__ == "__main__":
    lines = english_corpus()
    print(f"{len(lines)} lines, {sum(len(l) for l in lines) / 1e6:.2f} M characters")
