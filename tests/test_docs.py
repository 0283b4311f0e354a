"""The documentation website: `docs/build_site.py` turns every notebook into a page, offline.

The site is built once into a temporary folder. Static checks read the HTML; when Chromium is
installed, it loads the pages from a local server (screenshots, rendered DOM, network log)."""
import functools, http.server, json, re, shutil, subprocess, sys, threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(ROOT.glob('nbs/*.ipynb'), key=lambda p: (p.name != 'index.ipynb', p.name))  # nbdev's sidebar order
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
    "nbdev's docs processing runs every cell with an import in it, whole: such a cell must hold only imports (nbdev FAQ)."
    mixed = [l for l in (site.parent/'build.log').read_text().splitlines() if 'mixes imports with other code' in l]
    assert not mixed, 'nbdev_docs would run these cells whole:\n' + '\n'.join(mixed)

def test_every_notebook_has_a_page(site):
    assert NBS, 'no notebooks in nbs/'
    missing = [f'{nb.name} -> {page_of(nb)}' for nb in NBS if not (site/page_of(nb)).exists()]
    assert not missing, f'notebooks without a page: {missing}'

def test_sidebar_lists_notebooks_in_order(site):
    want = [page_of(nb) for nb in NBS]
    assert want[0] == 'index.html', 'nbs/index.ipynb should be the home page'
    assert sidebar_links((site/'search.html').read_text()) == want  # on search.html every entry is a link

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
    text = text_of(body)
    for raw in ['#|', '{target=', ':::', 'output-file:', 'System Message', 'Docutils System Messages']:
        assert raw not in text, f'{raw!r} left on {page_of(nb)}'
    assert 'system-message' not in body and 'class="problematic"' not in body
    first = re.search(r'<h(\d)', body)
    assert first and first.group(1) == '1', 'the page should start with its title as <h1>'
    assert not re.match(r'\s*(---|title:|description:)', text_of(body[first.start():]).strip()), 'raw front matter at the top'

def test_links_between_pages_resolve(site):
    pages = {p.name: p.read_text() for p in site.glob('*.html')}
    ids = {name: set(re.findall(r'\sid="([^"]+)"', html)) for name, html in pages.items()}
    broken = []
    for name, html in pages.items():
        for href in re.findall(r'href="([^":]*#[^"]+)"', html):  # same-site links with an anchor
            page, _, anchor = href.partition('#')
            if (page or name) in ids and anchor not in ids[page or name]: broken.append((name, href))
    assert not broken, f'links to missing anchors: {broken[:10]}'

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

def test_assets_are_local_and_math_is_served(site):
    mathjax = site/'_static'/'mathjax'/'tex-svg.js'
    if not mathjax.exists():
        pytest.skip('npm could not install mathjax@3, so the site loads MathJax from its CDN')
    for nb in NBS:
        html = (site/page_of(nb)).read_text()
        srcs = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html) + re.findall(r'<link[^>]*\shref="([^"]+\.(?:css|js|woff2?)[^"]*)"', html)
        remote = [s for s in srcs if re.match(r'(https?:)?//', s)]
        assert not remote, f'{page_of(nb)} loads {remote}'
        assert any(s.startswith('_static/mathjax/tex-svg.js') for s in srcs), f'{page_of(nb)} does not load the local MathJax'

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

def dom(tmp_path, url):
    "The page's DOM after its scripts (MathJax, search) ran."
    return chromium(tmp_path, '--virtual-time-budget=10000', '--dump-dom', url)

@pytest.mark.parametrize('nb', [NBS[0], TOKENIZER_NB], ids=['index', 'tokenizer'])
def test_screenshot_and_no_remote_requests(server, tmp_path, nb):
    from PIL import Image
    png, netlog = tmp_path/'page.png', tmp_path/'net.json'
    chromium(tmp_path, '--virtual-time-budget=5000', f'--screenshot={png}', f'--log-net-log={netlog}', server + page_of(nb))
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

def test_tokenizer_page_renders(server, tmp_path, site):
    page = page_of(TOKENIZER_NB)
    d = dom(tmp_path, server + page)
    links = sidebar_links(d)
    assert all(page_of(nb) in links for nb in NBS if page_of(nb) != page), f'sidebar links: {links}'
    assert re.search(r'<h[2-4][^>]*>\s*BasicTokenizer', d)
    if '<table' in (site/page).read_text(): assert '<table' in d

def test_math_renders(server, tmp_path, site):
    if not (site/'_static'/'mathjax'/'tex-svg.js').exists(): pytest.skip('no local MathJax (npm could not install mathjax@3)')
    with_math = [page_of(nb) for nb in NBS if 'class="math' in (site/page_of(nb)).read_text()]
    for page in dict.fromkeys([page_of(TOKENIZER_NB), *with_math]):
        d = dom(tmp_path, server + page)
        assert 'id="MJX-SVG-styles"' in d, f'MathJax did not start on {page}'
        if page in with_math: assert '<mjx-container' in d, f'MathJax did not typeset the math on {page}'
        assert 'data-mjx-error' not in d and '<mjx-merror' not in d, f'MathJax reported a TeX error on {page}'

def test_search_page_finds_wordpiece(server, tmp_path):
    d = dom(tmp_path, server + 'search.html?q=WordPiece')
    results = re.search(r'<ul[^>]*class="search".*?</ul>', d, re.S)
    assert results and page_of(TOKENIZER_NB) in results.group(0), 'searching "WordPiece" does not list the tokenizer page'
