"""Build bert_nb's documentation website offline, into `_site/`.

`nbdev_docs` renders nbdev's processed notebooks (`_proc/`) with Quarto, which cannot be installed
everywhere. This script takes the same processed notebooks, translates the little Quarto syntax in
them into MyST, and renders them with Sphinx + myst-nb (no execution) and sphinx-book-theme.
MathJax is served by the site itself (npm package `mathjax@3`), so a page loads with no network.

    .venv/bin/python docs/build_site.py [--out _site]
"""
import argparse, ast, contextlib, functools, html, io, json, re, shutil, subprocess, sys, tempfile
from pathlib import Path

import yaml
from docutils.nodes import make_id
from nbdev.config import get_config
from nbdev.processors import FilterDefaults, exec_show_docs, rm_export, _ast_contains, _def_types, _show_docs
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer
import nbdev.quarto, nbdev.serve

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT/'docs'
MATHJAX = DOCS/'node_modules'/'mathjax'/'es5'
MATHJAX_PARTS = ['tex-svg.js', 'input', 'output', 'a11y', 'ui', 'sre', 'adaptors']  # tex-svg.js, what it loads
CALLOUTS = {'note', 'tip', 'warning', 'important', 'caution'}

EXPORT_TAG = 'nbdev-export'  # the tag `keep_export_code` gives exported cells (nbdev drops their `#| export` line)

def keep_export_code(cell):
    "nbdev's `rm_export` without `export`: a literate notebook shows its exported code (hidden cells still go)."
    if cell.directives_.keys() & {'hide', 'default_exp'}: del cell['source']
    elif cell.directives_.keys() & {'export', 'exports'}: cell.metadata.setdefault('tags', []).append(EXPORT_TAG)

def mixes_imports(cell):
    "Is `cell` one nbdev's docs processing runs whole only because it has an import in it (which nbdev warns about)?"
    trees = cell.parsed_() if cell.cell_type == 'code' else None
    documents = cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or _show_docs(trees or [])
    return bool(trees) and not documents \
        and cell.directives_.get('eval:', [''])[0].lower() != 'false' \
        and _ast_contains(trees, (ast.Import, ast.ImportFrom)) and _ast_contains(trees, (ast.Expr, ast.Assign))

class exec_doc_cells(exec_show_docs):
    "nbdev's `exec_show_docs`, except that of a cell that `mixes_imports` only the imports run (nbdev runs it all)."
    def __call__(self, cell):
        if not (getattr(self, 'k', None) and self.nb.has_docs_ and mixes_imports(cell)): return super().__call__(cell)
        title, first = getattr(self.nb, 'frontmatter_', {}).get('title', '?'), cell.source.strip().splitlines()[0]
        print(f'WARNING: {title!r}: the cell starting {first!r} mixes imports with other code; nbdev_docs would run '
              'all of it (nbdev FAQ), this build only its imports. Put the imports in a cell of their own.',
              file=sys.stderr)
        self.k.run('\n'.join(ast.unparse(t) for t in cell.parsed_() if isinstance(t, (ast.Import, ast.ImportFrom))))
        if self.k.exc:
            raise Exception(f'Error in notebook {title!r}, in the imports of:\n{cell.source}') from self.k.exc

class DocsFilter(FilterDefaults):
    "nbdev's docs processors with `keep_export_code` and `exec_doc_cells` in place of `rm_export`, `exec_show_docs`."
    def base_procs(self):
        swap = {rm_export: keep_export_code, exec_show_docs: exec_doc_cells}
        return [swap.get(p, p) for p in super().base_procs()]

def process_nbs():
    "nbdev's docs processing of nbs/ into `_proc/` (show_doc and import cells run; no pip, no full run), sidebar.yml."
    if str(DOCS) not in sys.path: sys.path.insert(0, str(DOCS))
    import build_site  # nbdev's workers find DocsFilter by module name: not in `__main__`, which IPython replaces
    nbdev.serve.FilterDefaults = build_site.DocsFilter
    proc = Path(nbdev.serve.proc_nbs(force=True))
    out = io.StringIO()
    with contextlib.redirect_stdout(out): nbdev.quarto.nbdev_sidebar.__wrapped__(printit=True)
    if out.getvalue().strip(): (proc/'sidebar.yml').write_text(out.getvalue())  # else nbs/sidebar.yml was copied
    return proc

def sidebar_sections(proc):
    "The sections of `proc/sidebar.yml` as (caption, files), in order; files outside any section get caption None."
    def flat(items):
        for o in items:
            if isinstance(o, str): yield o
            elif isinstance(o, dict):
                if 'href' in o: yield o['href']
                yield from flat(o.get('contents', []))
    res = []
    for o in yaml.safe_load((proc/'sidebar.yml').read_text())['website']['sidebar']['contents']:
        caption = o.get('section') if isinstance(o, dict) else None
        files = list(flat(o.get('contents', []) if caption else [o]))
        if caption or not res or res[-1][0]: res.append((caption, files))
        else: res[-1][1].extend(files)
    return res

def sidebar_files(proc):
    "The files in `proc/sidebar.yml`, in order, sections flattened."
    return [f for _, files in sidebar_sections(proc) for f in files]

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
                line = (f'{div.group(1)}{{admonition}} {title.group(1)}\n:class: {kind.group(1)}' if title
                        else f'{div.group(1)}{{{kind.group(1)}}}')
            divs.append(keep)
            if not keep: continue
        elif div:  # closing fence
            if not (divs and divs.pop()): continue
        elif not in_code: line = re.sub(r'(\]\([^)\s]*\))\{[^}]*\}', r'\1', line)
        res.append(line)
    return '\n'.join(res)

def link_notebooks(md, pages):
    "Links to notebooks (nbdev style: `02_model.ipynb#the-encoder`) -> to their pages' sources (`model.ipynb#...`)."
    def fix(m):
        page = pages.get(m.group(2) + '.ipynb')
        return f'{m.group(1)}{page}.ipynb' if page else m.group(0)
    return re.sub(r'(\]\(\s*<?|href=["\'])(?:\./)?([\w.-]+)\.ipynb(?=[#)>"\'\s])', fix, md)

# --- show_doc's API entries -------------------------------------------------------------------------------

TEX_SYMBOLS = {n: chr(c) for n, c in zip('alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi '
                                         'omicron pi rho varsigma sigma tau upsilon phi chi psi omega'.split(),
                                         range(0x3b1, 0x3ca))}
TEX_SYMBOLS.update(varepsilon='ε', ell='ℓ', cdot='·', times='×', le='≤', leq='≤', ge='≥', geq='≥', ne='≠', neq='≠',
                   approx='≈', infty='∞', sum='∑', to='→', odot='⊙', Delta='Δ', Sigma='Σ', quad=' ', qquad=' ')
TEX_ACCENTS = {'hat': '\u0302', 'bar': '\u0304', 'tilde': '\u0303'}
SCRIPTS = {'^': dict(zip('0123456789+-niT', '⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻ⁿⁱᵀ')),
           '_': dict(zip('0123456789+-ijkt', '₀₁₂₃₄₅₆₇₈₉₊₋ᵢⱼₖₜ'))}

def tex_to_text(tex):
    r"Simple TeX as Unicode text, where MathJax does not typeset: `\epsilon` -> ε, `\sqrt{\hat v}` -> √v̂, `x^2` -> x²."
    def group(s, i):  # the argument at s[i] ({...}, a \command or a character), converted, and the index after it
        while i < len(s) and s[i] == ' ': i += 1
        if i < len(s) and s[i] == '{':
            depth = 0
            for j in range(i, len(s)):
                depth += {'{': 1, '}': -1}.get(s[j], 0)
                if depth == 0: return conv(s[i + 1:j]), j + 1
            return conv(s[i + 1:]), len(s)
        m = re.match(r'\\([A-Za-z]+)|.?', s[i:])
        return conv(m.group(0)), i + m.end()
    def conv(s):
        out, i = [], 0
        while i < len(s):
            m = re.match(r'\\([A-Za-z]+)', s[i:])
            if m:
                cmd, i = m.group(1), i + m.end()
                if cmd in ('sqrt', 'mathrm', 'text', 'mathbf', 'operatorname', *TEX_ACCENTS):
                    arg, i = group(s, i)
                    bare = ''.join(ch for ch in arg if ch not in TEX_ACCENTS.values())
                    out.append('√' + (arg if len(bare) == 1 else f'({arg})') if cmd == 'sqrt'
                               else arg + TEX_ACCENTS[cmd] if cmd in TEX_ACCENTS else arg)
                elif cmd == 'frac':
                    (a, i), paren = group(s, i), lambda x: x if len(x) == 1 else f'({x})'
                    b, i = group(s, i)
                    out.append(f'{paren(a)}/{paren(b)}')
                else: out.append(TEX_SYMBOLS.get(cmd, cmd))
            elif s[i] in SCRIPTS:
                kind, (arg, i) = s[i], group(s, i + 1)
                out.append(''.join(SCRIPTS[kind][ch] for ch in arg) if all(ch in SCRIPTS[kind] for ch in arg)
                           else f'{kind}{arg}' if len(arg) == 1 else f'{kind}({arg})')
            elif s[i] in '{}': i += 1
            else: out, i = out + [s[i]], i + 1
        return ''.join(out)
    return conv(tex)

def scan(code, stop):
    "Indices in `code` where `stop(code, i, depth)` is true, outside strings (and for depth, outside brackets)."
    quote, depth, i = None, 0, 0
    while i < len(code):
        ch = code[i]
        if quote:
            if ch == '\\': i += 1
            elif ch == quote: quote = None
        elif ch in '\'"': quote = ch
        elif ch in '([{': depth += 1
        elif ch in ')]}': depth -= 1
        elif stop(code, i, depth): yield i
        i += 1

def split_params(code):
    "A signature line's parameters: `a, f:int=g(1, 2), c` -> ['a,', 'f:int=g(1, 2),', 'c']."
    cuts = [i + 1 for i in scan(code, lambda s, i, d: s[i] == ',' and d == 0)]
    return [p.strip() for p in (code[a:b] for a, b in zip([0, *cuts], [*cuts, len(code)])) if p.strip()]

def split_comment(line):
    "A signature line as (code, comment), the comment after the first `#` outside strings (None when there is none)."
    i = next(scan(line, lambda s, i, d: s[i] == '#'), None)
    return (line, None) if i is None else (line[:i].rstrip(), line[i + 1:].strip())

def comment_html(md):
    "A docments comment's markdown (links, `code`, $math$) as HTML for a <pre>: live links, math as Unicode text."
    out, pos = [], 0
    for m in re.finditer(r'\[([^\]]*)\]\(([^)\s]+)\)|`([^`]+)`|\$([^$]+)\$', md):
        out.append(html.escape(md[pos:m.start()], quote=False))
        pos = m.end()
        if m.group(2):
            text = m.group(1)
            text = f'<code>{html.escape(text.strip("`"))}</code>' if text.startswith('`') else html.escape(text)
            out.append(f'<a class="reference external" href="{html.escape(m.group(2))}">{text}</a>')
        elif m.group(3): out.append(f'<code>{html.escape(m.group(3))}</code>')
        else: out.append(f'<span class="sig-math">{html.escape(tex_to_text(m.group(4)))}</span>')
    return ''.join(out) + html.escape(md[pos:], quote=False)

def signature_html(code, wrap_at=60):
    "show_doc's signature block as HTML: a parameter a line when a line holds several and is long; comments rendered."
    code = re.sub(r'(:\s*_RequiredParameter)?\s*=\s*<required parameter>', '=required', code)  # torch's `required`
    code = re.sub(r':\s*NoneType\s*=', '=', code)  # nbdev's type guessed from a default of None says nothing
    rows = [split_comment(l) for l in code.rstrip('\n').split('\n')]
    params = range(1, len(rows) - 1) if len(rows) > 2 and rows[0][0].endswith('(') else range(0)
    one_a_line = any(len(split_params(rows[i][0])) > 1 and len(rows[i][0]) > wrap_at for i in params)
    out = []
    for i, (line, comment) in enumerate(rows):
        parts = ['    ' + p for p in split_params(line)] if i in params and one_a_line else [line]
        for j, part in enumerate(parts):
            h = highlight(part, PythonLexer(), HtmlFormatter(nowrap=True)).rstrip('\n')
            if comment is not None and j == len(parts) - 1: h += f' <span class="c1"># {comment_html(comment)}</span>'
            out.append(f'<span class="{"sig-param" if i in params else "sig-line"}">{h}\n</span>')
    return ('<div class="highlight-python notranslate nbdev-signature"><div class="highlight"><pre>'
            + ''.join(out) + '</pre></div></div>')

@functools.cache
def lib_classes():
    "The names of the classes the exported modules define (read from their source: nothing is imported)."
    lib = ROOT/get_config(path=ROOT).lib_path.name
    return {n.name for f in lib.glob('*.py') for n in ast.parse(f.read_text(encoding='utf-8')).body
            if isinstance(n, ast.ClassDef)}

def render_show_doc(md):
    "show_doc's markdown as MyST: its heading with an index entry, the source link under it, the signature as HTML."
    md = quarto_to_myst(re.sub(r'^\s*---\s*\n', '', md))  # a leading `---` crashes docutils
    src = re.match(r'\s*\[source\]\(([^)]*)\)\s*\n+', md)
    if src: md = md[src.end():]
    head = re.match(r'\s*(#+) +([^\n]*?)\s*\n', md)
    if not head: return md
    name, rest = head.group(2), md[head.end():]
    sig = re.match(r'\s*```python\n(.*?)\n```[ \t]*(\n|$)', rest, re.S)
    code = sig.group(1) if sig else ''
    if name in lib_classes(): code = re.sub(rf'^def ({re.escape(name)})\(', r'class \1(', code)  # show_doc says `def`
    if sig: rest = signature_html(code) + '\n\n' + rest[sig.end():]
    index = f'```{{index}} single: {name}\n```\n\n'  # an entry of the general index, before a paragraph: its target
    if src: rest = f'{index}{{.nbdev-source}}\n[source]({src.group(1)})\n\n{rest.lstrip()}'  # (not raw HTML: no id)
    else:
        m = re.search(r'^(?=[^<\s])', rest.lstrip(), re.M)  # the first paragraph, after the signature
        rest = rest.lstrip()[:m.start()] + index + rest.lstrip()[m.start():] if m else rest + '\n\n' + index
    return f'{head.group(1)} {name.replace("_", chr(92) + "_")}\n\n' + rest  # `__call__` must not turn bold

def clean_md_output(md):
    "A markdown output made docutils-safe (no leading `---`, no Quarto syntax)."
    return quarto_to_myst(re.sub(r'^\s*---\s*\n', '', md))

# --- cells --------------------------------------------------------------------------------------------------

# a tqdm bar: `x: 40%|####  | 4/10 [00:01<00:02, 3it/s]` or `12it [00:01, 9.5it/s]`
TQDM_LINE = re.compile(r'(\d+%\|.*\||\d\S*) \[[\d:]+(<[\d:?]+)?, [^\]]*\]\s*$')

def is_noise(output):
    "Is `output` a stderr stream that holds only whitespace or tqdm progress bars (an empty box on the page)?"
    if output.get('output_type') != 'stream' or output.get('name') != 'stderr': return False
    return all(TQDM_LINE.search(l) for l in re.split(r'[\r\n]', ''.join(output.get('text', ''))) if l.strip())

def cell_options(src):
    "Split a code cell into its `#|` options (a dict) and the rest of its source."
    lines, opts = src.splitlines(), {}
    while lines and re.match(r'\s*#\|', lines[0]):
        k, _, v = re.sub(r'^\s*#\|\s*', '', lines.pop(0)).partition(':')
        opts[k.strip()] = v.strip().strip('"\'').lower()
    return opts, '\n'.join(lines)

def defined_names(src):
    "The names of the functions and classes `src` defines at its top level."
    try: return {o.name for o in ast.parse(src).body if isinstance(o, _def_types)}
    except SyntaxError: return set()

def fold_documented_exports(cells):
    "An exported cell whose names the show_docs right after it document folds ('Show source') under the first of them."
    i = 0
    while i < len(cells):
        c, j = cells[i], i + 1
        while j < len(cells) and 'show_doc' in cells[j]['metadata']: j += 1
        documented = {n.split('.')[-1] for d in cells[i + 1:j] for n in d['metadata']['show_doc']}
        exported = c['cell_type'] == 'code' and EXPORT_TAG in c['metadata'].get('tags', [])
        fold = exported and documented & defined_names(c['source'])
        if fold:
            c['metadata']['tags'].append('hide-input')
            cells[i], cells[i + 1] = cells[i + 1], c
        i = j if fold else i + 1
    for c in cells: c['metadata'].pop('show_doc', None)

def convert_nb(nb, pages=None, toctrees=None):
    "A processed notebook as myst-nb reads it: front matter as title + lead, Quarto options and syntax translated."
    fm, cells = front_matter(nb), []
    if fm: nb['cells'] = nb['cells'][1:]
    lead = f"\n{{.lead}}\n{fm['description']}\n" if fm.get('description') else ''
    head = f"# {fm.get('title', 'Untitled')}\n" + lead
    cells.append({'cell_type': 'markdown', 'metadata': {}, 'source': head})
    for c in nb['cells']:
        src = ''.join(c.get('source', ''))
        if c['cell_type'] == 'markdown': c['source'] = link_notebooks(quarto_to_myst(src), pages or {})
        elif c['cell_type'] == 'code':
            opts, c['source'] = cell_options(src)
            c['outputs'] = [o for o in c.get('outputs', []) if not is_noise(o)]
            if opts.get('include') == 'false' or not (c['source'].strip() or c['outputs']): continue
            tags = c['metadata'].setdefault('tags', [])
            if opts.get('echo') == 'false' or not c['source'].strip(): tags.append('remove-input')
            if opts.get('output') == 'false': tags.append('remove-output')
            if opts.get('output') == 'asis':  # show_doc: its markdown joins the page (real headings, in the contents)
                if 'remove-input' not in tags: cells.append(dict(c, outputs=[], execution_count=None))
                mds = [''.join(o['data']['text/markdown']) for o in c['outputs']
                       if 'text/markdown' in o.get('data', {})]
                if not mds: continue
                names = re.findall(r'^\s*show_doc\(\s*([\w.]+)', c['source'], re.M)
                c = {'cell_type': 'markdown', 'metadata': {'show_doc': names},
                     'source': '\n\n'.join(map(render_show_doc, mds))}
            for o in c.get('outputs', []) if c['cell_type'] == 'code' else []:
                if 'text/markdown' in o.get('data', {}):
                    o['data']['text/markdown'] = clean_md_output(''.join(o['data']['text/markdown']))
        else: continue  # raw cells are for Quarto only
        cells.append(c)
    fold_documented_exports(cells)
    for caption, names in toctrees or []:
        opts = f':caption: {caption}\n' if caption else ''
        cells.append({'cell_type': 'markdown', 'metadata': {},
                      'source': f'```{{toctree}}\n{opts}:hidden:\n\n' + '\n'.join(names) + '\n```'})
    for i, c in enumerate(cells): c['id'] = c.get('id') or f'cell-{i}'  # nbformat 4.5 wants ids; new cells lack them
    nb['cells'] = cells
    nb['metadata'].pop('widgets', None)  # would make myst-nb load the ipywidgets JS from a CDN
    return nb

# --- the site -----------------------------------------------------------------------------------------------

def ensure_mathjax():
    "The folder of MathJax 3 (npm `mathjax@3`, installed into docs/node_modules once), or None with a warning."
    if (MATHJAX/'tex-svg.js').exists(): return MATHJAX
    npm = shutil.which('npm')
    cmd = [npm, 'install', '--no-audit', '--no-fund', '--no-save', '--no-package-lock', '--prefix', str(DOCS),
           'mathjax@3']
    if npm and subprocess.run(cmd).returncode == 0 and (MATHJAX/'tex-svg.js').exists(): return MATHJAX
    print('WARNING: could not install mathjax@3 with npm: pages load MathJax from its CDN (math needs network)',
          file=sys.stderr)

def pages(proc):
    "The processed notebooks by page name (nbdev's `output-file`), in sidebar order."
    files = [f for f in sidebar_files(proc) if f.endswith('.ipynb') and (proc/f).exists()]
    skipped = [f for f in sidebar_files(proc) if f not in files]
    if skipped: print(f'WARNING: only existing notebooks become pages; skipped the sidebar entries {skipped}',
                      file=sys.stderr)
    unlisted = sorted({p.name for p in proc.glob('*.ipynb')} - set(files))
    if unlisted: print(f'WARNING: notebooks missing from the sidebar (sidebar.yml), left out: {unlisted}',
                       file=sys.stderr)
    names = [str(Path(f).parent/page_name(proc/f)) for f in files]
    dups = {n for n in names if names.count(n) > 1}
    if dups: sys.exit(f'ERROR: several notebooks give the pages {dups}: set distinct `output-file`s')
    return {name: proc/f for name, f in zip(names, files)}

def toctrees(proc, names):
    "The sidebar's sections as (caption, page names) for the home page's toctrees; there the home page is `self`."
    by_file, res = {str(f.relative_to(proc)): n for n, f in names.items()}, []
    for caption, files in sidebar_sections(proc):
        pages_ = [by_file[f] for f in files if f in by_file]
        pages_ = ['self' if n == 'index' else n for n in pages_] if caption else [n for n in pages_ if n != 'index']
        if pages_: res.append((caption, pages_))
    return res

def write_source(proc, src):
    "Write the Sphinx source tree: pages (index holds the toctrees), the files they use, conf.py, site.json, _static/."
    for p in proc.rglob('*'):  # images and other files the notebooks refer to
        if p.is_file() and p.suffix != '.ipynb' and p.name not in ('sidebar.yml', '_quarto.yml'):
            (src/p.relative_to(proc)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src/p.relative_to(proc))
    cfg = get_config()
    names = pages(proc)
    nbs = {name: json.loads(f.read_text()) for name, f in names.items()}
    if 'index' not in nbs:  # a home page, from settings.ini, when there is no index.ipynb
        fm = f'---\ntitle: {json.dumps(cfg.title)}\ndescription: {json.dumps(cfg.description)}\n---'
        home = {'cells': [{'cell_type': 'raw', 'metadata': {}, 'source': fm}], 'metadata': {}, 'nbformat': 4,
                'nbformat_minor': 5}
        nbs = {'index': home, **nbs}
    links = {str(f.relative_to(proc)): name for name, f in names.items()}
    sections = toctrees(proc, names)
    for name, nb in nbs.items():
        json_write(src/f'{name}.ipynb', convert_nb(nb, links, sections if name == 'index' else None))
    notebooks = {}
    for name, f in names.items():  # the notebooks themselves, for the header's download button
        orig = cfg.config_path/cfg.nbs_path/f.relative_to(proc)
        if orig.exists():
            (src/'_extra'/'notebooks'/orig.name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(orig, src/'_extra'/'notebooks'/orig.name)
            notebooks[name] = f'notebooks/{orig.name}'
    static = src/'_static'
    (static/'mathjax').mkdir(parents=True)
    if (src/'styles.css').exists(): shutil.move(src/'styles.css', static/'styles.css')
    for f in ('site.css', 'site.js'): shutil.copy2(DOCS/f, static/f)
    mj = ensure_mathjax()
    for part in MATHJAX_PARTS if mj else []:
        (shutil.copytree if (mj/part).is_dir() else shutil.copy2)(mj/part, static/'mathjax'/part)
    shutil.copy2(DOCS/'conf.py', src/'conf.py')
    site = {k: cfg.get(k, '') for k in ('title', 'description', 'author', 'copyright', 'git_url', 'branch')}
    json_write(src/'site.json', dict(site, mathjax=bool(mj), css=(static/'styles.css').exists(), notebooks=notebooks,
                                     home_in_toc=not any('self' in ns for _, ns in sections)))

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

def pandoc_id(title):
    "The id Pandoc (so Quarto, so nbdev's site) gives a heading: `The encoder: 12 layers` -> `the-encoder-12-layers`."
    s = re.sub(r'[^\w\s.-]', '', title.strip().lower())
    return re.sub(r'^[^a-z]+', '', re.sub(r'\s+', '-', s))

def resolve_anchors(site):
    "Links to `page.html#anchor` whose anchor is nbdev's (Pandoc's) id of a heading -> the id Sphinx gave that heading."
    ids, alias = {}, {}
    for page in (p.resolve() for p in site.rglob('*.html')):
        html_ = page.read_text()
        ids[page] = set(re.findall(r'\sid="([^"]+)"', html_))
        alias[page] = {}
        for sec, title in re.findall(r'<section id="([^"]+)">\s*<h\d[^>]*>(.*?)<a class="headerlink"', html_, re.S):
            text = html.unescape(re.sub(r'<[^>]+>', '', title))
            for a in (pandoc_id(text), make_id(text)): alias[page].setdefault(a, sec)
    for page in ids:
        def fix(m):
            target = (page.parent/m.group(1)).resolve() if m.group(1) else page
            if target not in ids or m.group(2) in ids[target]: return m.group(0)
            new = alias[target].get(m.group(2)) or alias[target].get(make_id(m.group(2))) or \
                  (make_id(m.group(2)) if make_id(m.group(2)) in ids[target] else None)
            return f'href="{m.group(1)}#{new}"' if new else m.group(0)
        old = page.read_text()
        new = re.sub(r'href="([^":#]*)#([^"]+)"', fix, old)
        if new != old: page.write_text(new)

def build(out=ROOT/'_site'):
    "Build the website into `out`: all happens in a `.site-*` folder beside it, then one rename (never half-written)."
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    from sphinx.cmd.build import build_main
    stage = Path(tempfile.mkdtemp(prefix='.site-', dir=out.parent))  # myst-nb also writes into the html folder's parent
    try:
        with contextlib.chdir(ROOT): write_source(process_nbs(), stage/'src')
        if build_main(['-b', 'html', '-q', '-d', str(stage/'doctrees'), str(stage/'src'), str(stage/'html')]):
            sys.exit('ERROR: sphinx-build failed (see above)')
        with contextlib.chdir(ROOT): local_doc_links(stage/'html', get_config())
        resolve_anchors(stage/'html')
        sources = stage/'html'/'_sources'  # empty (html_copy_source is off): nothing links there
        if sources.is_dir() and not any(sources.iterdir()): sources.rmdir()
        if out.exists(): out.rename(stage/'old')
        (stage/'html').rename(out)
    finally: shutil.rmtree(stage, ignore_errors=True)
    return out

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'_site'), help='folder to write the site to (default: _site)')
    print(f'Site built: {build(ap.parse_args().out)}/index.html')
