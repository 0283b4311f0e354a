"""Build bert_nb's documentation website offline, into `_site/`.

`nbdev_docs` renders nbdev's processed notebooks (`_proc/`) with Quarto, which cannot be installed
everywhere. This script takes the same processed notebooks, translates the little Quarto syntax in
them into MyST, and renders them with Sphinx + myst-nb (no execution) and sphinx-book-theme.
MathJax is served by the site itself (npm package `mathjax@3`), so a page loads with no network.

    .venv/bin/python docs/build_site.py [--out _site]
"""
import argparse, ast, contextlib, io, json, re, shutil, subprocess, sys, tempfile
from pathlib import Path

import yaml
from docutils.nodes import make_id
from nbdev.config import get_config
from nbdev.processors import FilterDefaults, exec_show_docs, rm_export, _ast_contains, _show_docs
import nbdev.quarto, nbdev.serve

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT/'docs'
MATHJAX = DOCS/'node_modules'/'mathjax'/'es5'
MATHJAX_PARTS = ['tex-svg.js', 'input', 'output', 'a11y', 'ui', 'sre', 'adaptors']  # tex-svg.js and what it loads on demand
CALLOUTS = {'note', 'tip', 'warning', 'important', 'caution'}

def keep_export_code(cell):
    "nbdev's `rm_export` without `export`: a literate notebook shows its exported code (hidden cells still go)."
    if cell.directives_.keys() & {'hide', 'default_exp'}: del cell['source']

def mixes_imports(cell):
    "Is `cell` one nbdev's docs processing runs whole only because it has an import in it (which nbdev warns about)?"
    trees = cell.parsed_() if cell.cell_type == 'code' else None
    return bool(trees) and not (cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or _show_docs(trees)) \
        and cell.directives_.get('eval:', [''])[0].lower() != 'false' \
        and _ast_contains(trees, (ast.Import, ast.ImportFrom)) and _ast_contains(trees, (ast.Expr, ast.Assign))

class exec_doc_cells(exec_show_docs):
    "nbdev's `exec_show_docs`, except that of a cell that `mixes_imports` only the imports run (nbdev runs it all)."
    def __call__(self, cell):
        if not (getattr(self, 'k', None) and self.nb.has_docs_ and mixes_imports(cell)): return super().__call__(cell)
        title, first = getattr(self.nb, 'frontmatter_', {}).get('title', '?'), cell.source.strip().splitlines()[0]
        print(f'WARNING: {title!r}: the cell starting {first!r} mixes imports with other code; nbdev_docs would run all of it '
              '(nbdev FAQ), this build only its imports. Put the imports in a cell of their own.', file=sys.stderr)
        self.k.run('\n'.join(ast.unparse(t) for t in cell.parsed_() if isinstance(t, (ast.Import, ast.ImportFrom))))
        if self.k.exc: raise Exception(f'Error in notebook {title!r}, in the imports of:\n{cell.source}') from self.k.exc

class DocsFilter(FilterDefaults):
    "nbdev's docs processors, with `keep_export_code` and `exec_doc_cells` in place of `rm_export` and `exec_show_docs`."
    def base_procs(self):
        swap = {rm_export: keep_export_code, exec_show_docs: exec_doc_cells}
        return [swap.get(p, p) for p in super().base_procs()]

def process_nbs():
    "Run nbdev's docs processing of nbs/ into `_proc/` (show_doc and import cells run; no pip, no full run) plus sidebar.yml."
    if str(DOCS) not in sys.path: sys.path.insert(0, str(DOCS))
    import build_site  # nbdev's workers find DocsFilter by module name: not in `__main__`, which IPython replaces
    nbdev.serve.FilterDefaults = build_site.DocsFilter
    proc = Path(nbdev.serve.proc_nbs(force=True))
    out = io.StringIO()
    with contextlib.redirect_stdout(out): nbdev.quarto.nbdev_sidebar.__wrapped__(printit=True)
    if out.getvalue().strip(): (proc/'sidebar.yml').write_text(out.getvalue())  # else custom_sidebar: nbs/sidebar.yml was copied
    return proc

def sidebar_files(proc):
    "The files in `proc/sidebar.yml`, in order, sections flattened."
    def flat(items):
        for o in items:
            if isinstance(o, str): yield o
            elif isinstance(o, dict):
                if 'href' in o: yield o['href']
                yield from flat(o.get('contents', []))
    return list(flat(yaml.safe_load((proc/'sidebar.yml').read_text())['website']['sidebar']['contents']))

def front_matter(nb):
    "The YAML front matter in the raw cell nbdev puts first, as a dict ({} if none)."
    cells = nb['cells']
    if not cells or cells[0]['cell_type'] != 'raw': return {}
    m = re.match(r'\s*---\n(.*?)\n---', ''.join(cells[0]['source']), re.S)
    return (yaml.safe_load(m.group(1)) or {}) if m else {}

def page_name(proc_nb):
    "The page (Sphinx docname) nbdev's `output-file` gives a processed notebook: `00_tokenizer.ipynb` -> `tokenizer`."
    nb = json.loads(Path(proc_nb).read_text())
    out = front_matter(nb).get('output-file', Path(proc_nb).stem + '.html')
    return Path(out).stem

def quarto_to_myst(md):
    "Quarto markdown -> MyST: callouts become admonitions; other fenced divs and link attributes (`{target=...}`) go."
    res, divs, in_code = [], [], None
    for line in md.splitlines():
        fence = re.match(r'\s*(`{3,}|~{3,})', line)
        if fence and (in_code is None or fence.group(1).startswith(in_code)):
            in_code = fence.group(1) if in_code is None else None
        div = None if in_code else re.match(r'\s*(:{3,})\s*(\{[^}]*\}|[\w.-]+)?\s*$', line)
        if div and div.group(2):  # opening fence, e.g. `::: {.callout-note title="Why"}`
            kind = re.search(r'callout-(\w+)', div.group(2))
            keep = bool(kind) and kind.group(1) in CALLOUTS
            if keep:
                title = re.search(r'title="([^"]*)"', div.group(2))
                line = f'{div.group(1)}{{admonition}} {title.group(1)}\n:class: {kind.group(1)}' if title else f'{div.group(1)}{{{kind.group(1)}}}'
            divs.append(keep)
            if not keep: continue
        elif div:  # closing fence
            if not (divs and divs.pop()): continue
        elif not in_code: line = re.sub(r'(\]\([^)\s]*\))\{[^}]*\}', r'\1', line)
        res.append(line)
    return '\n'.join(res)

def clean_show_doc(md):
    "show_doc's markdown, made docutils-safe: no leading `---`, the source link after the heading, not before."
    md = quarto_to_myst(re.sub(r'^\s*---\s*\n', '', md))
    md = re.sub(r'^(#+ )(.*)$', lambda m: m.group(1) + m.group(2).replace('_', r'\_'), md, count=1, flags=re.M)  # `__call__`: no bold
    m = re.match(r'\s*\[source\]\(([^)]*)\)\s*\n+(#+ [^\n]*\n)', md)
    if m: md = f'{m.group(2)}\n<p class="nbdev-source"><a href="{m.group(1)}">source</a></p>\n' + md[m.end():]
    return md

def cell_options(src):
    "Split a code cell into its `#|` options (a dict) and the rest of its source."
    lines, opts = src.splitlines(), {}
    while lines and re.match(r'\s*#\|', lines[0]):
        k, _, v = re.sub(r'^\s*#\|\s*', '', lines.pop(0)).partition(':')
        opts[k.strip()] = v.strip().strip('"\'').lower()
    return opts, '\n'.join(lines)

def convert_nb(nb, toctree=None):
    "A processed notebook as myst-nb reads it: front matter as title + lead, Quarto options and syntax translated."
    fm, cells = front_matter(nb), []
    if fm: nb['cells'] = nb['cells'][1:]
    head = f"# {fm.get('title', 'Untitled')}\n" + (f"\n{{.lead}}\n{fm['description']}\n" if fm.get('description') else '')
    cells.append({'cell_type': 'markdown', 'metadata': {}, 'source': head})
    for c in nb['cells']:
        src = ''.join(c.get('source', ''))
        if c['cell_type'] == 'markdown': c['source'] = quarto_to_myst(src)
        elif c['cell_type'] == 'code':
            opts, c['source'] = cell_options(src)
            if opts.get('include') == 'false' or not (c['source'].strip() or c.get('outputs')): continue
            tags = c['metadata'].setdefault('tags', [])
            if opts.get('echo') == 'false' or not c['source'].strip(): tags.append('remove-input')
            if opts.get('output') == 'false': tags.append('remove-output')
            if opts.get('output') == 'asis':  # show_doc: its markdown joins the page (real headings, in the page's contents)
                if 'remove-input' not in tags: cells.append(dict(c, outputs=[], execution_count=None))
                mds = [''.join(o['data']['text/markdown']) for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
                c = {'cell_type': 'markdown', 'metadata': {}, 'source': '\n\n'.join(map(clean_show_doc, mds))}
                if not mds: continue
            for o in c.get('outputs', []) if c['cell_type'] == 'code' else []:
                if 'text/markdown' in o.get('data', {}): o['data']['text/markdown'] = clean_show_doc(''.join(o['data']['text/markdown']))
        else: continue  # raw cells are for Quarto only
        cells.append(c)
    if toctree is not None:
        cells.append({'cell_type': 'markdown', 'metadata': {}, 'source': '```{toctree}\n:hidden:\n\n' + '\n'.join(toctree) + '\n```'})
    for i, c in enumerate(cells): c['id'] = c.get('id') or f'cell-{i}'  # nbformat 4.5 wants ids; nbdev's new cells lack them
    nb['cells'] = cells
    nb['metadata'].pop('widgets', None)  # would make myst-nb load the ipywidgets JS from a CDN
    return nb

def ensure_mathjax():
    "The folder of MathJax 3 (npm `mathjax@3`, installed into docs/node_modules once), or None with a warning."
    if (MATHJAX/'tex-svg.js').exists(): return MATHJAX
    npm = shutil.which('npm')
    cmd = [npm, 'install', '--no-audit', '--no-fund', '--no-save', '--no-package-lock', '--prefix', str(DOCS), 'mathjax@3']
    if npm and subprocess.run(cmd).returncode == 0 and (MATHJAX/'tex-svg.js').exists(): return MATHJAX
    print('WARNING: could not install mathjax@3 with npm: pages load MathJax from its CDN (math needs network)', file=sys.stderr)

def pages(proc):
    "The processed notebooks by page name (nbdev's `output-file`), in sidebar order."
    files = [f for f in sidebar_files(proc) if f.endswith('.ipynb') and (proc/f).exists()]
    skipped = [f for f in sidebar_files(proc) if f not in files]
    if skipped: print(f'WARNING: only notebooks become pages; skipped {skipped}', file=sys.stderr)
    names = [str(Path(f).parent/page_name(proc/f)) for f in files]
    dups = {n for n in names if names.count(n) > 1}
    if dups: sys.exit(f'ERROR: several notebooks give the pages {dups}: set distinct `output-file`s')
    return {name: proc/f for name, f in zip(names, files)}

def write_source(proc, src):
    "Write the Sphinx source tree: the pages (index holds the toctree), the files they use, conf.py, site.json, _static/."
    for p in proc.rglob('*'):  # images and other files the notebooks refer to
        if p.is_file() and p.suffix != '.ipynb' and p.name not in ('sidebar.yml', '_quarto.yml'):
            (src/p.relative_to(proc)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src/p.relative_to(proc))
    cfg = get_config()
    nbs = {name: json.loads(f.read_text()) for name, f in pages(proc).items()}
    if 'index' not in nbs:  # a home page, from settings.ini, when there is no index.ipynb
        fm = f'---\ntitle: {json.dumps(cfg.title)}\ndescription: {json.dumps(cfg.description)}\n---'
        nbs = {'index': {'cells': [{'cell_type': 'raw', 'metadata': {}, 'source': fm}], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}, **nbs}
    for name, nb in nbs.items():
        json_write(src/f'{name}.ipynb', convert_nb(nb, [n for n in nbs if n != 'index'] if name == 'index' else None))
    static = src/'_static'
    (static/'mathjax').mkdir(parents=True)
    if (src/'styles.css').exists(): shutil.move(src/'styles.css', static/'styles.css')
    mj = ensure_mathjax()
    for part in MATHJAX_PARTS if mj else []:
        (shutil.copytree if (mj/part).is_dir() else shutil.copy2)(mj/part, static/'mathjax'/part)
    shutil.copy2(DOCS/'conf.py', src/'conf.py')
    site = {k: cfg.get(k, '') for k in ('title', 'description', 'author', 'copyright', 'git_url', 'branch')}
    json_write(src/'site.json', dict(site, mathjax=bool(mj), css=(static/'styles.css').exists()))

def json_write(path, obj):
    "Write `obj` as JSON to `path`, making the folder."
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))

def local_doc_links(site, cfg):
    "Point nbdev's links to the hosted docs (`doc_host` + `doc_baseurl`) at the pages of this site."
    base = re.escape('/'.join(o for o in (cfg.doc_host.rstrip('/'), cfg.doc_baseurl.strip('/')) if o) + '/')
    for page in site.rglob('*.html'):
        up = '../' * (len(page.relative_to(site).parts) - 1)
        fix = lambda m: f'href="{up}{m.group(1)}' + (f'#{make_id(m.group(2))}"' if m.group(2) else '"')
        html = page.read_text()
        new = re.sub(rf'href="{base}([^"#]*)(?:#([^"]*))?"', fix, html)
        if new != html: page.write_text(new)

def build(out=ROOT/'_site'):
    "Build the website into `out`: everything happens in a `.site-*` folder beside it, then one rename (never half-written)."
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    from sphinx.cmd.build import build_main
    stage = Path(tempfile.mkdtemp(prefix='.site-', dir=out.parent))  # myst-nb also writes into the html folder's parent
    try:
        with contextlib.chdir(ROOT): write_source(process_nbs(), stage/'src')
        if build_main(['-b', 'html', '-q', '-d', str(stage/'doctrees'), str(stage/'src'), str(stage/'html')]):
            sys.exit('ERROR: sphinx-build failed (see above)')
        with contextlib.chdir(ROOT): local_doc_links(stage/'html', get_config())
        if out.exists(): out.rename(stage/'old')
        (stage/'html').rename(out)
    finally: shutil.rmtree(stage, ignore_errors=True)
    return out

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'_site'), help='folder to write the site to (default: _site)')
    print(f'Site built: {build(ap.parse_args().out)}/index.html')
