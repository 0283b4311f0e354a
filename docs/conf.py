"""Sphinx settings for bert_nb's website. docs/build_site.py copies this file into the source tree it
writes, beside `site.json` (title, author, ... from settings.ini) and `_static/` (styles.css, MathJax)."""
import json
from pathlib import Path

site = json.loads((Path(__file__).parent/'site.json').read_text())
project, author, copyright = site['title'], site['author'], site['copyright']

extensions = ['myst_nb']
nb_execution_mode = 'off'              # outputs come from the notebooks, as nbdev saved them
nb_render_markdown_format = 'myst'     # show_doc's markdown output has tables and math
nb_ipywidgets_js = {}                  # no require.js / widget manager from a CDN
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'attrs_block']
exclude_patterns = ['_static', '_extra', 'site.json']
nb_code_prompt_show = 'Show {type}'   # an exported cell folded under its API entry: "Show source"
nb_code_prompt_hide = 'Hide {type}'
suppress_warnings = ['myst.header',     # show_doc headings may skip a level, as they do in nbdev's Quarto site
                    'myst.xref_missing']  # nbdev's anchors (`02_model.ipynb#the-encoder`): build_site.py resolves them

html_theme = 'sphinx_book_theme'
html_title = site['title']
html_static_path = ['_static']
html_extra_path = ['_extra']           # notebooks/*.ipynb: what the header's download button gives
html_css_files = (['styles.css'] if site['css'] else []) + ['site.css']
html_js_files = [('site.js', {'defer': 'defer'})]  # deferred: runs after searchtools.js on the search page
html_copy_source = html_show_sourcelink = False
html_theme_options = {
    'repository_url': site['git_url'], 'repository_branch': site['branch'], 'path_to_docs': 'nbs',
    'use_repository_button': True, 'home_page_in_toc': site['home_in_toc'], 'show_toc_level': 2,
    'navbar_persistent': [],  # else pydata-sphinx-theme adds a second search box in a header bar
}
if site['mathjax']:
    mathjax_path = 'mathjax/tex-svg.js'  # relative: served from the site's _static/, no CDN

def notebook_download(app, pagename, templatename, context, doctree):
    "The header's download menu offers the page's notebook itself (copied from nbs/) and print to PDF, no `_sources/`."
    nb = site['notebooks'].get(pagename)
    for group in context.get('header_buttons', []):
        if group.get('label') != 'download-buttons': continue
        group['buttons'] = [b for b in group['buttons'] if b.get('label') == 'download-pdf-button']
        if nb: group['buttons'].insert(0, {
            'type': 'link', 'url': context['pathto'](nb, 1), 'text': '.ipynb', 'icon': 'fas fa-code',
            'tooltip': 'Download the notebook', 'label': 'download-notebook-button'})

def setup(app):
    "MathJax on every page (math in any output renders; every page is checked the same way); the download menu fixed."
    app.set_html_assets_policy('always')
    app.connect('html-page-context', notebook_download, priority=502)  # after sphinx-book-theme's buttons (501)
