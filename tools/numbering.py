"""Chapter and equation numbers for the site (loaded by ``tools/sphinx_local.py``).

A chapter is a derivation page and its lab (``_toc.yml`` lists them in pairs); chapters are
numbered 1, 2, ... across the parts, in the order of the table of contents. Then:

* the title of both pages carries the chapter's number ("7 DDPM" and "7 DDPM: lab"), so the
  sidebar, the page heading and the browser tab show it;
* the derivation page's equations are numbered by chapter, (7.1), (7.2), ..., and every
  ``{eq}`` reference to them, from any page, shows that number;
* a lab refers to an equation as "equation (ddpm-marginal)", which stays readable in Colab; in
  the built site that "(ddpm-marginal)" becomes a link showing "(7.3)", to the equation on the
  derivation page.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from docutils import nodes
from sphinx.application import Sphinx

FRONT_AND_BACK = {"Getting started", "Reference"}
_LABEL_REF = re.compile(r"\(([A-Za-z][A-Za-z0-9_:-]*)\)")
_LINKED_LABEL = re.compile(r"(equation\s+)?\(([A-Za-z][A-Za-z0-9_:-]*)\)")  # a link's whole text
_SKIP = (nodes.literal, nodes.literal_block, nodes.math, nodes.math_block, nodes.reference, nodes.raw)


def chapter_numbers(toc_path: Path) -> dict[str, int]:
    """docname -> chapter number for every derivation page and lab in ``_toc.yml``."""
    toc = yaml.safe_load(toc_path.read_text())
    numbers: dict[str, int] = {}
    n = 0
    for part in toc.get("parts", []):
        if part.get("caption") in FRONT_AND_BACK:
            continue
        files = [c["file"] for c in part.get("chapters", [])]
        for page, lab in zip(files[::2], files[1::2]):
            n += 1
            numbers[page] = numbers[lab] = n
    return numbers


def _numbers(app: Sphinx) -> dict[str, int]:
    # Kept on the application, not the (pickled) environment: an incremental build must number
    # from the table of contents as it is now, not as it was when the environment was saved.
    if not hasattr(app, "dr_chapter_numbers"):
        app.dr_chapter_numbers = chapter_numbers(Path(app.srcdir) / "_toc.yml")
    return app.dr_chapter_numbers


def _renumbered(app: Sphinx, env, added: set[str], changed: set[str], removed: set[str]) -> list[str]:
    """Re-read every numbered page when the chapter numbers changed since the last build (a
    chapter added or moved in ``_toc.yml``); otherwise unchanged pages keep their old numbers."""
    new = _numbers(app)
    old = getattr(env, "dr_toc_numbers", None)
    env.dr_toc_numbers = dict(new)
    if old == new:
        return []
    return [doc for doc in new if doc in env.found_docs and doc not in added]


def _number_doc(app: Sphinx, doctree: nodes.document) -> None:
    """Prefix the page title with its chapter number; number equations by chapter."""
    docname = app.env.docname
    if not hasattr(app.env, "dr_equation_numbers"):
        app.env.dr_equation_numbers = {}
    chapter = _numbers(app).get(docname)
    if chapter is None:
        return
    for section in doctree.findall(nodes.section):
        title = section.next_node(nodes.title)
        if title is not None and not title.astext().startswith(f"{chapter} "):
            title.insert(0, nodes.Text(f"{chapter} "))
        break
    if docname.startswith("notebooks/"):
        return
    equations = app.env.get_domain("math").equations
    for node in doctree.findall(nodes.math_block):
        number, label = node.get("number"), node.get("label")
        if number is None or str(number).startswith(f"{chapter}."):
            continue
        node["number"] = f"{chapter}.{number}"
        if label and equations.get(label, (None,))[0] == docname:
            equations[label] = (docname, node["number"])
        if node.get("ids"):
            app.env.dr_equation_numbers.setdefault(docname, {})[node["ids"][0]] = (chapter, int(number))


def _purge(app: Sphinx, env, docname: str) -> None:
    getattr(env, "dr_equation_numbers", {}).pop(docname, None)


def _env_numbers(app: Sphinx, env) -> list[str]:
    """With ``numfig`` on (Jupyter Book's default), Sphinx shows the numbers it assigned in
    ``toc_fignumbers``; put the chapter numbers there too, so pages and references agree."""
    for docname, ids in getattr(env, "dr_equation_numbers", {}).items():
        table = env.toc_fignumbers.setdefault(docname, {}).setdefault("displaymath", {})
        table.update(ids)
    return []


def _link_lab_equations(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """In a lab, turn "(label)" of a book equation into a link showing the equation's number."""
    if not docname.startswith("notebooks/") or app.builder.format != "html":
        return
    equations = app.env.get_domain("math").equations
    # A link whose text is "(label)" (written in the lab as a markdown link to the derivation
    # page, so that it works in Colab too) shows the number and points within the site.
    for ref in list(doctree.findall(nodes.reference)):
        m = _LINKED_LABEL.fullmatch(ref.astext().strip())
        found = equations.get(m.group(2)) if m else None
        if not found:
            continue
        target_doc, number = found
        uri = app.builder.get_relative_uri(docname, target_doc) + "#" + nodes.make_id(f"equation-{m.group(2)}")
        new_ref = nodes.reference("", "", internal=True, refuri=uri, classes=["dr-eqref"])
        new_ref.append(nodes.Text(f"({number})"))
        ref.replace_self([nodes.Text(m.group(1)), new_ref] if m.group(1) else new_ref)
    for text in list(doctree.findall(nodes.Text)):
        parent = text.parent
        if parent is None or any(isinstance(a, _SKIP) for a in _ancestors(text)):
            continue
        source = text.astext()
        if not _LABEL_REF.search(source):
            continue
        pieces: list[nodes.Node] = []
        last = 0
        for m in _LABEL_REF.finditer(source):
            found = equations.get(m.group(1))
            if not found:
                continue
            target_doc, number = found
            pieces.append(nodes.Text(source[last : m.start()]))
            uri = app.builder.get_relative_uri(docname, target_doc) + "#" + nodes.make_id(f"equation-{m.group(1)}")
            ref = nodes.reference("", "", internal=True, refuri=uri, classes=["dr-eqref"])
            ref.append(nodes.Text(f"({number})"))
            pieces.append(ref)
            last = m.end()
        if not pieces:
            continue
        pieces.append(nodes.Text(source[last:]))
        parent.replace(text, pieces)


def _ancestors(node: nodes.Node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def setup(app: Sphinx) -> None:
    app.connect("doctree-read", _number_doc, priority=400)  # before the title collector (500)
    app.connect("env-purge-doc", _purge)
    app.connect("env-get-outdated", _renumbered)
    app.connect("env-get-updated", _env_numbers, priority=900)  # after Sphinx assigns figure numbers
    app.connect("doctree-resolved", _link_lab_equations)
