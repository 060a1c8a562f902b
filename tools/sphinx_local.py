"""A small Sphinx extension with the book's local fixes (loaded through ``_config.yml``).

* Serves MathJax 3 from the site itself: ``npm ci`` puts a pinned copy in ``node_modules``;
  we stage the files a page can load into ``_build/vendor-root/_vendor/mathjax`` and add that
  folder to ``html_extra_path`` (outside ``_static``, whose ``.js`` files Jupyter Book would
  inject into every page). Without npm the build still works, loading MathJax from the CDN,
  and says so.
* On the API page, turns "Implements (label)" in a docstring into a link to that equation.
* Rewrites the labs' absolute links to the published site (kept in the notebooks, so that they
  work in Colab) into relative links in the built HTML, so that a locally served or mirrored
  copy of the site never sends the reader away.
* Draws the front page's map of the book (``tools/bookmap.py``) before the pages are read.
* Numbers chapters and equations by chapter (``tools/numbering.py``).
* Removes the second copy of the Thebe configuration script that sphinx-book-theme adds
  (the browser logs "THEBE_JS_URL has already been declared" otherwise).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from docutils.nodes import make_id
from sphinx.application import Sphinx
from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[1]
MATHJAX_SRC = ROOT / "node_modules" / "mathjax" / "es5"
STAGE = ROOT / "_build" / "vendor-root"
# Only what tex-mml-chtml.js loads: the combined component, its TeX extensions (autoloaded),
# the CHTML fonts and the menu/accessibility components it may pull in on demand.
MATHJAX_PARTS = ["tex-mml-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors"]

logger = logging.getLogger(__name__)


def _stage_mathjax() -> bool:
    if not (MATHJAX_SRC / "tex-mml-chtml.js").exists():
        return False
    dest = STAGE / "_vendor" / "mathjax"
    stamp = dest / ".complete"
    if not stamp.exists():
        shutil.rmtree(dest, ignore_errors=True)
        for part in MATHJAX_PARTS:
            src = MATHJAX_SRC / part
            if src.is_dir():
                shutil.copytree(src, dest / part)
            else:
                (dest / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / part)
        stamp.write_text("ok\n")
    return True


def _config_inited(app: Sphinx, config) -> None:
    import bookmap  # tools/ is on the path of a local extension

    bookmap.write_map(Path(app.srcdir))  # the front page's map, drawn anew from _toc.yml
    if _stage_mathjax():
        config.html_extra_path = [*config.html_extra_path, str(STAGE)]
        # Relative paths in mathjax_path are taken relative to _static/.
        config.mathjax_path = "../_vendor/mathjax/tex-mml-chtml.js"
        logger.info("MathJax: served from the site (_vendor/mathjax)")
    else:
        logger.info(
            "MathJax: npm's copy is missing (run `npm ci`), so pages load MathJax from the CDN "
            "and need internet access to typeset math"
        )


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        key = (getattr(js, "filename", None) or "", getattr(js, "attributes", {}).get("body", ""))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    scripts[:] = kept


_IMPLEMENTS = re.compile(r"(Implements\s+)((?:\([A-Za-z0-9_:-]+\)(?:,\s*|\s+and\s+)?)+)")


def _link_equations(app: Sphinx, what: str, name: str, obj, options, lines: list[str]) -> None:
    def repl(m: re.Match) -> str:
        return m.group(1) + re.sub(r"\(([A-Za-z0-9_:-]+)\)", r":eq:`\1`", m.group(2))

    for i, line in enumerate(lines):
        lines[i] = _IMPLEMENTS.sub(repl, line)


def _relative_links(app: Sphinx, exception: Exception | None) -> None:
    """Turn ``<a href="{html_baseurl}...">`` into a link relative to the page, in every page."""
    base = (app.config.html_baseurl or "").rstrip("/")
    if exception is not None or app.builder.format != "html" or not base:
        return
    out = Path(app.outdir)
    anchor = re.compile(r'(<a\b[^>]*?\bhref=")' + re.escape(base) + r'/([^"#?]*)([^"]*)"')
    for page in out.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if base not in text:
            continue

        def repl(m: re.Match, page: Path = page) -> str:
            target = m.group(2) or "index.html"
            rel = os.path.relpath(out / target, page.parent).replace(os.sep, "/")
            rest = m.group(3)
            if rest.startswith("#"):  # Sphinx's anchors are normalised ids (lower case, dashes)
                rest = "#" + make_id(rest[1:])
            return f'{m.group(1)}{rel}{rest}"'

        new = anchor.sub(repl, text)
        if new != text:
            page.write_text(new, encoding="utf-8")


def _root_favicon(app: Sphinx, exception: Exception | None) -> None:
    """Serve the book's icon at ``/favicon.ico`` too. Every page links its icon, but the root
    ``index.html`` Jupyter Book writes is a bare redirect, so a browser asks the server for
    ``/favicon.ico``; without the file that request fails with a 404 (a console error), or not,
    depending on how fast the redirect wins."""
    if exception is not None or app.builder.format != "html" or not app.config.html_favicon:
        return
    src = Path(app.outdir) / "_static" / Path(app.config.html_favicon).name
    if src.is_file():
        shutil.copy2(src, Path(app.outdir) / "favicon.ico")  # browsers read a PNG served under .ico


def setup(app: Sphinx) -> dict:
    import numbering  # tools/ is on the path of a local extension

    numbering.setup(app)
    app.connect("build-finished", _relative_links)
    app.connect("build-finished", _root_favicon)
    app.connect("autodoc-process-docstring", _link_equations)
    app.connect("config-inited", _config_inited, priority=900)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
