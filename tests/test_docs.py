"""The documentation website: `docs/build_site.py` turns every notebook into a page, offline.

The site is built once into a temporary folder. Static checks read the HTML; when Chromium is
installed, it loads the pages from a local server (screenshots, rendered DOM, network log, and
measurements in the rendered page through tests/browser.py)."""
import functools, http.server, json, re, shutil, subprocess, sys, threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(ROOT.glob('nbs/*.ipynb'), key=lambda p: (p.name != 'index.ipynb', p.name))
SIDEBAR = ROOT/'nbs'/'sidebar.yml'
TOKENIZER_NB = ROOT/'nbs'/'00_tokenizer.ipynb'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--window-size=1280,900',
                  # Chromium's own services (sign-in, updates) must not leave the machine either
                  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1']

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the site once, into a temporary folder."
    out = tmp_path_factory.mktemp('docs')/'site'
    r = subprocess.run([sys.executable, str(ROOT/'docs'/'build_site.py'), '--out', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'build_site.py failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}'
    assert not list(out.parent.glob('.site-*')), 'the temporary build folder was left behind'
    (out.parent/'build.log').write_text(r.stdout + r.stderr)
    return out

def page_of(nb):
    "The page nbdev names the notebook `nb` (its `output-file`, from the processed copy in _proc/)."
    assert (ROOT/'_proc'/nb.name).exists(), f'{nb.name} was not processed (is it in nbs/?)'
    raw = json.loads((ROOT/'_proc'/nb.name).read_text())['cells'][0]
    m = re.search(r'^output-file:\s*(\S+)', ''.join(raw['source']), re.M)
    return m.group(1) if m else nb.stem + '.html'

def article(html):
    "The page's article (what the notebook became), without the theme around it."
    m = re.search(r'<article class="bd-article".*?</article>', html, re.S)
    assert m, 'no <article class="bd-article"> in the page'
    return m.group(0)

def text_of(html):
    "The text a reader sees in `html` (tags dropped, entities decoded)."
    class P(HTMLParser):
        def __init__(self): super().__init__(); self.parts = []
        def handle_data(self, d): self.parts.append(d)
    p = P(); p.feed(html)
    return ''.join(p.parts)

def sidebar_links(html):
    "The hrefs of the sidebar's page links, in order."
    nav = re.search(r'<nav class="[^"]*bd-docs-nav.*?</nav>', html, re.S)
    assert nav, 'no sidebar navigation in the page'
    return re.findall(r'<a class="reference internal" href="([^"]+)"', nav.group(0))

def test_build_has_no_docutils_problems(site):
    log = (site.parent/'build.log').read_text()
    bad = [l for l in log.splitlines() if re.search(r'\b(ERROR|SEVERE|CRITICAL)\b|\[docutils\]', l)]
    assert not bad, 'the build reported:\n' + '\n'.join(bad[:20])

def test_notebooks_keep_imports_in_their_own_cells(site):
    "nbdev's docs processing runs every cell with an import in it, whole: such a cell holds only imports (nbdev FAQ)."
    mixed = [l for l in (site.parent/'build.log').read_text().splitlines() if 'mixes imports with other code' in l]
    assert not mixed, 'nbdev_docs would run these cells whole:\n' + '\n'.join(mixed)

def test_every_notebook_has_a_page(site):
    assert NBS, 'no notebooks in nbs/'
    missing = [f'{nb.name} -> {page_of(nb)}' for nb in NBS if not (site/page_of(nb)).exists()]
    assert not missing, f'notebooks without a page: {missing}'

def sidebar_sections():
    "nbs/sidebar.yml's sections as (caption, notebook files)."
    contents = yaml.safe_load(SIDEBAR.read_text())['website']['sidebar']['contents']
    return [(o['section'], o['contents']) for o in contents]

def test_sidebar_yml_lists_every_notebook_once():
    "nbs/sidebar.yml (nbdev's custom sidebar) puts every notebook in one section: a new notebook must be added to it."
    assert re.search(r'^custom_sidebar\s*=\s*True\s*$', (ROOT/'settings.ini').read_text(), re.M), \
        'settings.ini must say `custom_sidebar = True`, or nbdev_docs overwrites nbs/sidebar.yml'
    sections = sidebar_sections()
    assert [c for c, _ in sections][:1] == ['Get started'] and sections[0][1][0] == 'index.ipynb'
    listed = [f for _, files in sections for f in files]
    twice = sorted({f for f in listed if listed.count(f) > 1})
    missing = sorted({nb.name for nb in NBS} - set(listed))
    assert not twice, f'listed more than once in nbs/sidebar.yml: {twice}'
    assert not missing, f'notebooks missing from nbs/sidebar.yml (add each to a section): {missing}'

def sidebar_sections_of(html):
    "The sidebar of a page as (caption, hrefs of its page links) in order."
    nav = re.search(r'<nav class="[^"]*bd-docs-nav.*?</nav>', html, re.S)
    assert nav, 'no sidebar navigation in the page'
    parts = re.split(r'<p[^>]*class="caption"[^>]*><span class="caption-text">(.*?)</span></p>', nav.group(0))
    return [(text_of(caption), re.findall(r'<a class="reference internal" href="([^"]+)"', links))
            for caption, links in zip(parts[1::2], parts[2::2])]

def test_sidebar_has_the_sections_of_sidebar_yml(site):
    pages = {nb.name: page_of(nb) for nb in NBS}
    want = [(caption, [pages[f] for f in files if f in pages]) for caption, files in sidebar_sections()]
    assert sidebar_sections_of((site/'search.html').read_text()) == [w for w in want if w[1]]  # search.html: all links

def test_search_finds_tokenizer_words(site):
    assert (site/'search.html').exists()
    js = (site/'searchindex.js').read_text()
    index = json.loads(js[js.index('(') + 1:js.rindex(')')])
    doc = index['docnames'].index(page_of(TOKENIZER_NB).removesuffix('.html'))
    hits = [v for k, v in index['terms'].items() if k.startswith('wordpiec')]  # "WordPiece", stemmed
    docs = {d for v in hits for d in (v if isinstance(v, list) else [v])}
    assert doc in docs, f'"WordPiece" is not indexed for the tokenizer page (hits: {hits})'

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_no_raw_markup_left(site, nb):
    html = (site/page_of(nb)).read_text()
    body = article(html)
    prose = text_of(re.sub(r'<code class="docutils literal.*?</code>|<pre>.*?</pre>', '', body, flags=re.S))
    code = '\n'.join(text_of(c) for c in re.findall(r'<pre>.*?</pre>', body, re.S))
    assert not re.search(r'^\s*#\|', code, re.M), f'a `#|` cell option left in the code on {page_of(nb)}'
    for raw in ['#|', '{target=', ':::', 'output-file:', 'System Message', 'Docutils System Messages']:
        assert raw not in prose, f'{raw!r} left on {page_of(nb)}'
    assert 'system-message' not in body and 'class="problematic"' not in body
    first = re.search(r'<h(\d)', body)
    assert first and first.group(1) == '1', 'the page should start with its title as <h1>'
    top = text_of(body[first.start():]).strip()
    assert not re.match(r'\s*(---|title:|description:)', top), 'raw front matter at the top'

def test_links_between_pages_resolve(site):
    pages = {p.name: p.read_text() for p in site.glob('*.html')}
    ids = {name: set(re.findall(r'\sid="([^"]+)"', html)) for name, html in pages.items()}
    broken = []
    for name, html in pages.items():
        for href in re.findall(r'href="([^":#]*#[^"]+)"', html):  # same-site links with an anchor
            page, _, anchor = href.partition('#')
            if (page or name) in ids and anchor not in ids[page or name]: broken.append((name, href))
        body = article(html) if name in [page_of(nb) for nb in NBS] else ''
        for href in re.findall(r'href="([^":#]+\.(?:html|ipynb))(?:#[^"]*)?"', body):  # links to pages and notebooks
            if not (site/href).exists() or (href.endswith('.ipynb') and not href.startswith('notebooks/')):
                broken.append((name, href))
    assert not broken, f'links to missing pages or anchors: {broken[:10]}'
    for nb in NBS:  # every markdown link to a notebook became a link to its page
        md = ' '.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'markdown')
        for target, anchor in re.findall(r'\]\((?:\./)?([\w.-]+\.ipynb)(#[^)\s]*)?\)', md):
            if not (ROOT/'nbs'/target).exists(): continue
            hrefs = re.findall(rf'href="{re.escape(page_of(ROOT/"nbs"/target))}(#[^"]*)?"', article(pages[page_of(nb)]))
            assert hrefs, f'{nb.name}: the link to {target}{anchor} is no link to {page_of(ROOT/"nbs"/target)}'
            if anchor: assert any(h for h in hrefs), f'{nb.name}: the link to {target}{anchor} lost its anchor'

def code_cells(nb):
    "The code cells of `nb` as (nbdev directives, code without `#|` lines, whitespace squeezed)."
    for c in json.loads(nb.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'code':
            dirs = set(re.findall(r'^\s*#\|\s*([\w-]+)', src, re.M))
            yield dirs, ' '.join(re.sub(r'^\s*#\|.*$', '', src, flags=re.M).split())

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_export_cells_show_and_hidden_cells_do_not(site, nb):
    text = ' '.join(text_of(article((site/page_of(nb)).read_text())).split())
    cells = list(code_cells(nb))
    others = [c for d, c in cells if 'hide' not in d]
    missing = [c[:80] for d, c in cells if 'export' in d and c not in text]
    shown = [c[:80] for d, c in cells if 'hide' in d and c and c in text and not any(c in o for o in others)]
    assert not missing, f'exported code missing from {page_of(nb)}: {missing}'
    assert not shown, f'hidden cells shown on {page_of(nb)}: {shown}'

def test_show_doc_signatures(site):
    assert TOKENIZER_NB.exists(), 'nbs/00_tokenizer.ipynb is missing'
    body = article((site/page_of(TOKENIZER_NB)).read_text())
    assert re.search(r'<h[2-4][^>]*>\s*BasicTokenizer\b', body), 'no show_doc heading for BasicTokenizer'
    sigs = [text_of(p) for p in re.findall(r'<pre>.*?</pre>', body, re.S)]
    assert any(re.search(r'BasicTokenizer\s*\(', s) for s in sigs), 'no signature of BasicTokenizer'
    assert not re.search(r'<h[1-6][^>]*>\s*---', body)

def show_docs(nb):
    "The signature blocks nbdev's show_doc wrote into the processed notebook `nb` (markdown outputs of `output: asis`)."
    cells = json.loads((ROOT/'_proc'/nb.name).read_text())['cells']
    mds = [''.join(o['data']['text/markdown']) for c in cells
           if c['cell_type'] == 'code' and '#| output: asis' in ''.join(c['source'])
           for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
    return [m for md in mds for m in re.findall(r'```python\n.*?```', md, re.S)]

def signatures(body):
    "The signature blocks of show_doc entries in an article, as HTML."
    return re.findall(r'<div class="[^"]*nbdev-signature[^"]*">.*?</pre>', body, re.S)

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_api_signatures_read_cleanly(site, nb):
    "Every show_doc signature is rendered: links live, no raw markdown or TeX, torch's `required`, a parameter a line."
    body = article((site/page_of(nb)).read_text())
    sigs = signatures(body)
    assert len(sigs) == len(show_docs(nb)), f'{page_of(nb)}: {len(show_docs(nb))} signatures, {len(sigs)} rendered'
    for sig in sigs:
        text = text_of(re.sub(r'<code>.*?</code>', '', sig))  # `$BERT_NB_NO_PROGRESS` in code is no TeX
        name = re.search(r'class="nf">([^<]+)', sig)
        assert not re.search(r'\[[^\]]*\]\([^)]*\)', text), f'raw markdown link in the signature of {name and name[1]}'
        assert '$' not in text, f'raw TeX in the signature of {name and name[1]}: {text}'
        assert '_RequiredParameter' not in text and '<required parameter>' not in text, text
        assert 'NoneType' not in text, f'a type guessed from a default of None in the signature of {name and name[1]}'
        for line in re.findall(r'<span class="sig-param">(.*?)\n</span>', sig, re.S):  # a long line: one parameter
            code = text_of(re.sub(r'<span class="c1">.*', '', line, flags=re.S)).strip()
            assert len(code) <= 60 or code.count(',') <= 1 or '(' in code, f'parameters crammed on a line: {code}'

def api_headings(body):
    "The headings of show_doc entries in an article (the heading before each `nbdev-source` link or signature)."
    return [text_of(h) for h in re.findall(r'<h[2-6]>((?:(?!</h).)*?)<a class="headerlink"[^>]*>#</a></h[2-6]>\s*'
                                            r'(?:<p class="nbdev-source"|<div class="[^"]*nbdev-signature)',
                                            body, re.S)]

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_no_duplicate_api_entries_and_every_one_has_a_docstring(site, nb):
    body = article((site/page_of(nb)).read_text())
    heads = api_headings(body)
    assert len(heads) == len(signatures(body)), f'API entries not found on {page_of(nb)}'
    dups = sorted({h for h in heads if heads.count(h) > 1})
    assert not dups, f'API entries shown twice on {page_of(nb)}: {dups}'
    assert 'Call self as a function.' not in text_of(body), \
        f'{page_of(nb)}: an API entry without a docstring shows Python\'s "Call self as a function." (give it one)'

def test_general_index_lists_every_api_entry(site):
    hrefs = set(re.findall(r'<a href="([^"]+)"', article((site/'genindex.html').read_text())))
    missing = []
    for nb in NBS:
        body = article((site/page_of(nb)).read_text())
        targets = re.findall(r'<h[2-6]>((?:(?!</h).)*?)<a class="headerlink"[^>]*>#</a></h[2-6]>\s*'
                             r'<p class="nbdev-source" id="([^"]+)"', body, re.S)  # the index entry's target
        assert len(targets) == body.count('<p class="nbdev-source"'), f'{page_of(nb)}: entries without a target'
        missing += [text_of(h) for h, i in targets if f'{page_of(nb)}#{i}' not in hrefs]
    assert not missing, f'API entries missing from genindex.html: {missing[:10]}'
    assert 'href="genindex.html"' in (site/'index.html').read_text(), 'no link to the general index'

def test_documented_exports_fold_under_their_entry(site):
    "An exported cell documented by the show_doc right after it is folded (details), below that entry's signature."
    body = article((site/'optimizer.html').read_text())
    folds = re.findall(r'<details class="[^"]*hide above-input">.*?</details>', body, re.S)
    assert folds and all('Show source' in f for f in folds)
    entry = body.index('<h3>BertAdam<')
    fold = re.search(r'<details class="[^"]*hide above-input">.*?</details>', body[entry:], re.S)
    assert fold and re.search(r'class="n[cf]">BertAdam<', fold.group(0)), 'BertAdam\'s source is not folded under it'
    assert body.index('nbdev-signature', entry) < entry + fold.start(), 'BertAdam\'s source comes before its signature'
    for nb in NBS:  # folding hides only exported code
        exported = [c for d, c in code_cells(nb) if d & {'export', 'exports'}]
        body = article((site/page_of(nb)).read_text())
        for f in re.findall(r'<details class="[^"]*hide above-input">.*?</details>', body, re.S):
            code = ' '.join(text_of(f).replace('Show source', '').replace('Hide source', '').split())
            assert any(code and code in c for c in exported), f'{page_of(nb)}: folded code, not exported: {code[:80]}'

STDERR = re.compile(r'<div class="output stderr[^"]*">\s*<div class="highlight"><pre>(.*?)</pre>', re.S)

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_no_empty_or_progress_bar_stderr(site, nb):
    for out in STDERR.findall(article((site/page_of(nb)).read_text())):
        lines = [l for l in re.split(r'[\r\n]', text_of(out)) if l.strip()]
        assert lines, f'an empty stderr box on {page_of(nb)}'
        assert not all(re.search(r'\d+%\|.*\|', l) for l in lines), f'a progress bar on {page_of(nb)}: {lines[0]}'

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_download_button_gives_the_notebook(site, nb):
    html = (site/page_of(nb)).read_text()
    assert '_sources/' not in html, f'{page_of(nb)} links to _sources/, which holds nothing'
    link = re.search(r'<a href="([^"]+)"[^>]*class="[^"]*download-notebook-button', html)
    assert link, f'no notebook download button on {page_of(nb)}'
    got = json.loads((site/link.group(1)).read_text())
    assert got['nbformat'] == 4 and got['cells'], f'{link.group(1)} is no notebook'
    assert got == json.loads(nb.read_text()), f'{link.group(1)} is not {nb.name}'

def test_notebook_links_become_page_links():
    "nbdev-style links (`02_model.ipynb#the-encoder`) point at the page, and at the id Sphinx gave that heading."
    sys.path.insert(0, str(ROOT/'docs'))
    import build_site
    pages = {'02_model.ipynb': 'model', '00_tokenizer.ipynb': 'tokenizer'}
    md = build_site.link_notebooks('[a](02_model.ipynb#the-encoder) [b](./00_tokenizer.ipynb) '
                                   '[c](https://x.org/02_model.ipynb)', pages)
    assert md == '[a](model.ipynb#the-encoder) [b](tokenizer.ipynb) [c](https://x.org/02_model.ipynb)'
    assert build_site.pandoc_id("bert_nb's side: 1.5x faster!") == 'bert_nbs-side-1.5x-faster'

def test_links_resolve_to_pandoc_ids(tmp_path):
    sys.path.insert(0, str(ROOT/'docs'))
    import build_site
    (tmp_path/'model.html').write_text('<section id="bert-nb-s-side-1-5x">\n<h2>bert_nb’s side: 1.5x'
                                       '<a class="headerlink" href="#bert-nb-s-side-1-5x">#</a></h2></section>')
    (tmp_path/'index.html').write_text('<a href="model.html#bert_nbs-side-1.5x">x</a> '
                                       '<a href="model.html#nothing">y</a>')
    build_site.resolve_anchors(tmp_path)
    assert (tmp_path/'index.html').read_text() == ('<a href="model.html#bert-nb-s-side-1-5x">x</a> '
                                                   '<a href="model.html#nothing">y</a>')

def test_assets_are_local_and_math_is_served(site):
    mathjax = site/'_static'/'mathjax'/'tex-svg.js'
    if not mathjax.exists():
        pytest.skip('npm could not install mathjax@3, so the site loads MathJax from its CDN')
    for nb in NBS:
        html = (site/page_of(nb)).read_text()
        srcs = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html) + \
            re.findall(r'<link[^>]*\shref="([^"]+\.(?:css|js|woff2?)[^"]*)"', html)
        remote = [s for s in srcs if re.match(r'(https?:)?//', s)]
        assert not remote, f'{page_of(nb)} loads {remote}'
        assert any(s.startswith('_static/mathjax/tex-svg.js') for s in srcs), f'{page_of(nb)}: no local MathJax'

# --- In a browser -----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def server(site):
    "The site served by Python's http.server on 127.0.0.1, at a free port: its base URL."
    if not CHROMIUM: pytest.skip('chromium is not installed (`make test` installs it with apt-get when root)')
    quiet = type('Quiet', (http.server.SimpleHTTPRequestHandler,), {'log_message': lambda *a: None})
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown()

def chromium(tmp_path, *args):
    "Run headless Chromium with a fresh profile; its stdout."
    r = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f'--user-data-dir={tmp_path/"profile"}', *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout

@pytest.mark.parametrize('nb', [NBS[0], TOKENIZER_NB], ids=['index', 'tokenizer'])
def test_screenshot_and_no_remote_requests(server, tmp_path, nb):
    from PIL import Image
    png, netlog = tmp_path/'page.png', tmp_path/'net.json'
    chromium(tmp_path, '--virtual-time-budget=5000', f'--screenshot={png}', f'--log-net-log={netlog}',
             server + page_of(nb))
    assert png.exists() and png.stat().st_size > 20_000, 'screenshot missing or nearly empty'
    colours = Image.open(png).convert('RGB').getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, 'screenshot is (nearly) a single colour'
    log = json.loads(netlog.read_text())
    start = log['constants']['logEventTypes']['URL_REQUEST_START_JOB']
    origin = server.rstrip('/')
    jobs = [e.get('params', {}) for e in log['events'] if e['type'] == start]
    urls = [p['url'] for p in jobs if p.get('initiator') == origin]  # the page's requests (Chromium's own have none)
    assert urls, 'the page requested nothing: did it load?'
    remote = [u for u in urls if not (u.startswith(server) or u.startswith('data:'))]
    assert not remote, f'the page requested {remote}'

@pytest.fixture(scope='module')
def browser(server):
    "One headless Chromium (tests/browser.py) for the module's rendered checks."
    from browser import Browser
    with Browser() as b: yield b

def test_tokenizer_page_renders(server, browser, site):
    page = page_of(TOKENIZER_NB)
    browser.width(1400).goto(server + page)
    d = browser.js('document.documentElement.outerHTML')
    links = sidebar_links(d)
    assert all(page_of(nb) in links for nb in NBS if page_of(nb) != page), f'sidebar links: {links}'
    assert re.search(r'<h[2-4][^>]*>\s*BasicTokenizer', d)
    if '<table' in (site/page).read_text(): assert '<table' in d

def test_math_renders(server, browser, site):
    if not (site/'_static'/'mathjax'/'tex-svg.js').exists():
        pytest.skip('no local MathJax (npm could not install mathjax@3)')
    with_math = [page_of(nb) for nb in NBS if 'class="math' in (site/page_of(nb)).read_text()]
    for page in dict.fromkeys([page_of(TOKENIZER_NB), *with_math]):
        browser.goto(server + page, settle=0)
        browser.wait_for('window.MathJax?.startup?.promise && true')
        browser.js('MathJax.startup.promise.then(() => true)')  # typesetting done
        d = browser.js('document.documentElement.outerHTML')
        assert 'id="MJX-SVG-styles"' in d, f'MathJax did not start on {page}'
        if page in with_math: assert '<mjx-container' in d, f'MathJax did not typeset the math on {page}'
        assert 'data-mjx-error' not in d and '<mjx-merror' not in d, f'MathJax reported a TeX error on {page}'

def search(browser, server, query):
    "Search the site for `query` on search.html: the results as [{href, text}] once search and snippets are done."
    browser.goto(f'{server}search.html?q={query}', settle=0)
    browser.wait_for('document.querySelector("#search-results .search-summary")'
                     '?.textContent.match(/found|did not match/i)')
    browser.wait_for('[...document.querySelectorAll("ul.search li")].every(li => li.querySelector("p.context"))')
    return browser.js('[...document.querySelectorAll("ul.search li")].map(li => ({href: li.querySelector("a").href, '
                      'text: li.querySelector("p.context").textContent}))')

def test_search_page_finds_wordpiece(server, browser):
    results = search(browser, server, 'WordPiece')
    assert any(page_of(TOKENIZER_NB) in r['href'] for r in results), '"WordPiece" does not find the tokenizer page'

def test_search_snippets_show_no_tex(server, browser, site):
    r"A result's snippet is text: math near the word searched for shows as symbols, not as `\(\beta_1\)` or `$...$`."
    body = article((site/'optimizer.html').read_text())
    assert re.search(r'class="math[^"]*">\\\(\\beta', body), 'the optimizer page has no inline math with beta any more'
    results = search(browser, server, 'gradient')
    snippets = [r['text'] for r in results if 'optimizer.html' in r['href']]
    assert snippets and any('β' in t for t in snippets), f'no optimizer snippet with its math as text: {snippets}'
    for text in (r['text'] for r in results):
        assert not re.search(r'\\[()[\]]|\$|\\[A-Za-z]+', text), f'raw TeX in a search result: {text}'

MEASURE = """(() => {
  const art = document.querySelector('article.bd-article'), box = art.getBoundingClientRect();
  const imgs = [...art.querySelectorAll('img')].map(i => { const r = i.getBoundingClientRect();
    return {src: i.getAttribute('src'), w: r.width, h: r.height, nw: i.naturalWidth, nh: i.naturalHeight,
            right: r.right}; });
  const pres = [...art.querySelectorAll('pre')].filter(p => p.offsetParent).map(p => ({
    text: p.textContent.slice(0, 80), scroll: p.scrollWidth, client: p.clientWidth,
    overflow: getComputedStyle(p).overflowX,
    right: p.getBoundingClientRect().right,
    kind: p.closest('.nbdev-signature') ? 'signature' : p.closest('.cell_input') ? 'input' : 'other'}));
  const heads = [...art.querySelectorAll('h1, h2, h3, h4')].map(h => ({
    text: h.textContent.slice(0, 60), scroll: h.scrollWidth, client: h.clientWidth}));
  return {right: box.right, imgs, pres, heads};
})()"""

@pytest.fixture(scope='module')
def layouts(browser, server):
    "Every page at 1400 and 420 px wide: the article's right edge, the boxes of its images, <pre> blocks, headings."
    res = {}
    for w in (1400, 420):
        browser.width(w)
        for nb in NBS:
            browser.goto(server + page_of(nb), settle=0)
            browser.wait_for('[...document.images].every(i => i.complete)')
            res[w, page_of(nb)] = browser.js(MEASURE)
    return res

def test_images_keep_their_aspect_ratio(layouts):
    assert any(m['imgs'] for m in layouts.values()), 'no page has an image: nothing was checked'
    bad = [(w, page, i['src'][-16:], f"{i['w']:.0f}x{i['h']:.0f} for {i['nw']}x{i['nh']}")
           for (w, page), m in layouts.items() for i in m['imgs']
           if not i['nw'] or abs(i['w'] / i['h'] / (i['nw'] / i['nh']) - 1) > 0.02 or i['right'] > m['right'] + 1]
    assert not bad, f'images squashed, broken or wider than the column (width, page, image, shown/natural): {bad[:8]}'

def test_code_fits_its_column_or_scrolls(layouts):
    "No <pre> is cut: code cells and signatures wrap inside the column; other blocks (outputs) may scroll in their box."
    cut, unwrapped = [], []
    for (w, page), m in layouts.items():
        for p in m['pres']:
            scrolls = p['overflow'] in ('auto', 'scroll')
            if p['right'] > m['right'] + 1 or (p['scroll'] > p['client'] + 1 and not scrolls):
                cut.append((w, page, p['text']))
            elif p['kind'] != 'other' and p['scroll'] > p['client'] + 1: unwrapped.append((w, page, p['text']))
    assert not cut, f'code cut at the column edge (width, page, start): {cut[:8]}'
    assert not unwrapped, f'code or signatures that scroll sideways instead of wrapping: {unwrapped[:8]}'

def test_headings_wrap_inside_the_column(layouts):
    "A long API heading (`BertForQuestionAnswering.forward`) breaks inside the column on a phone instead of being cut."
    cut = [(w, page, h['text']) for (w, page), m in layouts.items() for h in m['heads'] if h['scroll'] > h['client'] + 1]
    assert not cut, f'headings cut at the column edge (width, page, heading): {cut[:8]}'

COPY_FIRST_CELL = """(async () => {
  let copied = null;
  Object.defineProperty(navigator, 'clipboard', {value: {writeText: async t => { copied = t; }}, configurable: true});
  const box = document.querySelector('.cell_input div.highlight');
  box.querySelector('button.copy-code').click();
  await new Promise(r => setTimeout(r, 50));
  return [copied, box.querySelector('pre').textContent.replace(/\\n$/, '')];
})()"""

def test_copy_buttons_copy_the_code(server, browser):
    browser.width(1400).goto(server + page_of(TOKENIZER_NB))
    cells, buttons = browser.js('[document.querySelectorAll(".cell_input div.highlight").length, '
                                'document.querySelectorAll(".cell_input div.highlight > button.copy-code").length]')
    assert cells and buttons == cells, f'{buttons} copy buttons for {cells} code cells'
    assert browser.js('document.querySelectorAll(".cell_output .copy-code, .nbdev-signature .copy-code").length') == 0
    copied, code = browser.js(COPY_FIRST_CELL)
    assert copied and copied == code, f'the button copied {copied!r}, the cell holds {code!r}'
    doctest = browser.js('(() => { const pre = document.createElement("pre"); '
                         'pre.textContent = ">>> x = 1\\n>>> print(x)\\n1\\n"; return bertNbSite.codeOf(pre); })()')
    assert doctest == 'x = 1\nprint(x)', f'a doctest-style block is copied without prompts and output: {doctest!r}'

def test_signatures_say_class_or_def(site):
    "show_doc writes `def` before every signature; a class's reads `class`, a function's `def`."
    sys.path.insert(0, str(ROOT/'docs'))
    from build_site import lib_classes
    seen = {'class': 0, 'def': 0}
    for nb in NBS:
        for sig in signatures(article((site/page_of(nb)).read_text())):
            m = re.match(r'\s*(class|def)\s+([\w.]+)\(', text_of(sig))
            assert m, f'{page_of(nb)}: a signature that starts with neither class nor def: {text_of(sig)[:80]}'
            want = 'class' if m.group(2) in lib_classes() else 'def'
            assert m.group(1) == want, f'{page_of(nb)}: {m.group(2)} is shown as `{m.group(1)}`, not `{want}`'
            seen[want] += 1
    assert seen['class'] > 10 and seen['def'] > 10, seen
