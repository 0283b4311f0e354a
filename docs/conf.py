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
exclude_patterns = ['_static', 'site.json']
suppress_warnings = ['myst.header']    # show_doc headings may skip a level, as they do in nbdev's Quarto site

html_theme = 'sphinx_book_theme'
html_title = site['title']
html_static_path = ['_static']
html_css_files = ['styles.css'] if site['css'] else []
html_copy_source = html_show_sourcelink = False
html_theme_options = {
    'repository_url': site['git_url'], 'repository_branch': site['branch'], 'path_to_docs': 'nbs',
    'use_repository_button': True, 'home_page_in_toc': True, 'show_toc_level': 2,
    'navbar_persistent': [],  # else pydata-sphinx-theme adds a second search box in a header bar
}
if site['mathjax']:
    mathjax_path = 'mathjax/tex-svg.js'  # relative: served from the site's _static/, no CDN

def setup(app):
    "Load MathJax on every page, so math in any output renders and every page is checked the same way."
    app.set_html_assets_policy('always')
