"""The book as a reader meets it: built with warnings as errors, served on 127.0.0.1 and
opened page by page in Debian's Chromium through Playwright.

Every page must log no console error, send no request beyond 127.0.0.1, typeset its
mathematics without a TeX error, link only to files and anchors of the site (apart from the
launch and repository buttons) and weigh at most 6 MB. Every control of every explorer moves
its figure without a kernel; the Colab launch link points at each lab; chapters and equations
carry their numbers; the front page shows the map; search finds chapters offline.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from tools.labs import ROOT

pytestmark = pytest.mark.slow

HTML = ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-quic", "--disable-sync",
]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


@pytest.fixture(scope="session")
def built_site() -> Path:
    """Build the book exactly as `make book` does; warnings are errors."""
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--warningiserror", "--keep-going", "--builder", "html"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        pytest.fail(f"the book does not build with warnings as errors:\n{tail}")
    assert (HTML / "index.html").exists()
    return HTML


def test_book_builds_with_warnings_as_errors(built_site):
    assert (built_site / "book" / "notation.html").exists()


def test_the_site_root_serves_the_icon(built_site):
    """The root index.html is a bare redirect without an icon link: browsers then fetch
    /favicon.ico, and a missing file is a console error on the front page."""
    ico = built_site / "favicon.ico"
    assert ico.is_file() and ico.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mathjax_is_served_from_the_site(built_site):
    assert (built_site / "_vendor" / "mathjax" / "tex-mml-chtml.js").exists(), (
        "MathJax was not vendored: run `npm ci` (make vendor) before building"
    )
    # Nothing in _static is a vendored bundle that Jupyter Book would inject into every page.
    assert not list((built_site / "_static").rglob("tex-mml-chtml.js"))


@pytest.fixture(scope="session")
def server(built_site):
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output readable
        pass


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("install Debian's chromium (apt-get install chromium) to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _pages(root: Path) -> list[str]:
    skip = {"_static", "_sources", "_vendor", "_images"}
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.html") if not (set(p.relative_to(root).parts) & skip)
    )


def _open(browser, url: str, on_response=None):
    """Open a page; return (page, console errors, foreign requests)."""
    errors: list[str] = []
    foreign: list[str] = []
    page = browser.new_page()
    if on_response is not None:
        page.on("response", on_response)

    def on_request(req) -> None:
        u = urlparse(req.url)
        if u.scheme in ("http", "https", "ws", "wss") and u.hostname != "127.0.0.1":
            foreign.append(req.url)

    page.on("request", on_request)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.goto(url, wait_until="load")
    if page.locator(".math").count():
        page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise && "
            "MathJax.startup.promise.then(() => true)",
            timeout=20_000,
        )
        page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 0", timeout=20_000)
    page.wait_for_timeout(150)
    return page, errors, foreign


REPO_URL = CONFIG["repository"]["url"].rstrip("/")
#: The only links that may leave the site: the launch buttons and the repository buttons.
OUTSIDE_OK = ("https://colab.research.google.com/", "https://mybinder.org/", REPO_URL + "/", REPO_URL)
_IDS = re.compile(r"""\bid=["']([^"']+)["']""")


@functools.cache
def _ids_in(path: Path) -> frozenset[str]:
    return frozenset(_IDS.findall(path.read_text(encoding="utf-8", errors="replace")))


def _link_problems(root: Path, server: str, rel: str, hrefs: list[str]) -> list[str]:
    """Links that leave the site (other than the allowed buttons) or point at nothing in it."""
    problems = []
    for href in hrefs:
        u = urlparse(href)
        if u.scheme in ("mailto", "javascript", "data", "blob"):
            continue
        if not href.startswith(server):
            if not (href == REPO_URL or href.startswith(OUTSIDE_OK)):
                problems.append(f"{rel}: link leaves the site: {href}")
            continue
        path = unquote(u.path).lstrip("/")
        target = root / path
        if not path or path.endswith("/") or target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"{rel}: link to a missing file: {href}")
        elif u.fragment and target.suffix == ".html" and unquote(u.fragment) not in _ids_in(target):
            problems.append(f"{rel}: link to a missing anchor: {href}")
    return problems


def _hrefs(page) -> list[str]:
    """Every link target on the page, as the browser resolves it (a redirecting page is followed)."""
    for _ in range(3):
        try:
            return page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        except Exception:  # the page navigated (index.html redirects): wait and ask again
            page.wait_for_load_state("load")
    return page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")


def _lab_pages() -> list[str]:
    out = []
    for part in TOC["parts"]:
        for c in part["chapters"]:
            if c["file"].startswith("notebooks/"):
                out.append(c["file"])
    return out


_VISIBLE_FRAME = "el => Array.from(el.querySelectorAll('img.dr-frame')).findIndex(i => i.style.display !== 'none')"


def _move_control(page, control) -> None:
    """Move one control of a static explorer as a reader would: keys on a slider, a pick in a menu."""
    control.scroll_into_view_if_needed()
    if control.evaluate("el => el.tagName") == "SELECT":
        n = control.locator("option").count()
        current = control.evaluate("el => el.selectedIndex")
        control.select_option(index=(current + 1) % n)  # by index: a value string could match a label
    else:
        at_start = control.input_value() == control.get_attribute("min")
        control.focus()
        page.keyboard.press("End" if at_start else "Home")


def _try_explorers(page, lab: str) -> tuple[int, int, list[str]]:
    """Move every control of every explorer on a lab page; (explorers, controls, problems)."""
    problems, n_explorers, n_controls = [], 0, 0
    explorers = page.locator(".dr-explorer")
    for e in range(explorers.count()):
        player = explorers.nth(e)
        n_explorers += 1
        controls = player.locator(".dr-control")
        if controls.count() == 0:
            problems.append(f"{lab}: explorer {e} shows no control")
        for k in range(controls.count()):
            n_controls += 1
            before = player.evaluate(_VISIBLE_FRAME)
            _move_control(page, controls.nth(k))
            after = player.evaluate(_VISIBLE_FRAME)
            img = player.locator("img.dr-frame").nth(after)
            if after == before or not img.is_visible():
                problems.append(f"{lab}: explorer {e}, control {k}: the frame did not change")
    if page.locator(".jupyter-widgets, .widget-area").count():
        problems.append(f"{lab}: a widget view was rendered (it needs a kernel)")
    return n_explorers, n_controls, problems


@pytest.fixture(scope="session")
def tour(built_site, server, browser) -> dict[str, dict]:
    """Every page of the site, opened once as a reader opens it (loading a page with its
    mathematics typeset is what costs time, so the browser tests below share one visit).

    For each page: console errors, requests leaving the machine, link problems, math counts and
    the bytes loaded from the site; for each lab also its Colab links and what moving every
    control of every explorer did."""
    labs = {f"{lab}.html": lab for lab in _lab_pages()}
    visits: dict[str, dict] = {}
    for rel in _pages(built_site):
        sizes: dict[str, int] = {}

        def on_response(resp, sizes=sizes) -> None:
            if resp.url.startswith(server):
                path = built_site / unquote(urlparse(resp.url).path).lstrip("/")
                if path.is_file():
                    sizes[resp.url] = path.stat().st_size

        page, errors, foreign = _open(browser, f"{server}/{rel}", on_response=on_response)
        v = {"links": _link_problems(built_site, server, rel, _hrefs(page)),
             "math": page.locator(".math").count(), "typeset": page.locator("mjx-container").count(),
             "tex_errors": page.locator("mjx-merror").count()}
        if rel in labs:
            v["colab"] = page.eval_on_selector_all("a[href*='colab.research.google.com']", "els => els.map(e => e.href)")
            v["explorers"], v["controls"], v["explorer_problems"] = _try_explorers(page, labs[rel])
        page.close()
        v.update(errors=errors, foreign=foreign, bytes=sum(sizes.values()))
        visits[rel] = v
    return visits


def test_every_page_is_clean_offline_and_typeset(tour):
    """No console error, no request leaving 127.0.0.1, all math typeset, and every link on the
    page resolves to a file (and anchor) of the built site, except the launch and repository
    buttons."""
    problems = []
    for rel, v in tour.items():
        problems += v["links"]
        if v["errors"]:
            problems.append(f"{rel}: console errors {v['errors'][:3]}")
        if v["foreign"]:
            problems.append(f"{rel}: requests leaving the machine {v['foreign'][:3]}")
        if v["math"] and v["typeset"] < v["math"]:
            problems.append(f"{rel}: {v['math']} math elements but {v['typeset']} typeset")
        if v["tex_errors"]:
            problems.append(f"{rel}: {v['tex_errors']} TeX errors (mjx-merror)")
    assert len(tour) > len(_lab_pages()), "the tour missed pages"
    assert not problems, "\n".join(problems)


def test_colab_launch_links_point_at_each_lab(tour):
    repo = urlparse(CONFIG["repository"]["url"]).path.strip("/")
    branch = CONFIG["repository"].get("branch", "main")
    labs = _lab_pages()
    assert labs, "no labs in the toc"
    for lab in labs:
        hrefs = tour[f"{lab}.html"]["colab"]
        expected = f"https://colab.research.google.com/github/{repo}/blob/{branch}/{lab}.ipynb"
        assert expected in hrefs, f"{lab}: Colab link {hrefs} != {expected}"


def test_every_control_of_every_explorer_changes_the_frame(tour):
    """On the static site every control of every explorer is rendered and moves the figure."""
    labs = [tour[f"{lab}.html"] for lab in _lab_pages()]
    n_explorers = sum(v["explorers"] for v in labs)
    n_controls = sum(v["controls"] for v in labs)
    problems = [p for v in labs for p in v["explorer_problems"]]
    assert n_explorers >= len(labs) // 2 and n_controls > n_explorers, (n_explorers, n_controls)
    assert not problems, "\n".join(problems)


MAX_PAGE_BYTES = 6 * 1024 * 1024


def test_no_page_weighs_more_than_6_mb(tour):
    """What a reader downloads for a page: the HTML (with its inline frames) and every resource
    the page loads from the site, as the browser reports them."""
    heavy = [f"{rel}: {v['bytes'] / 2**20:.1f} MiB" for rel, v in tour.items() if v["bytes"] > MAX_PAGE_BYTES]
    assert all(v["bytes"] > 0 for v in tour.values()), "a page loaded nothing from the site"
    assert not heavy, f"pages over {MAX_PAGE_BYTES / 2**20:.0f} MiB: {heavy}"


def _chapter_files() -> list[tuple[int, str, str]]:
    from tools.numbering import chapter_numbers

    numbers = chapter_numbers(ROOT / "_toc.yml")
    pages = [d for d in numbers if d.startswith("book/")]
    labs = {numbers[d]: d for d in numbers if d.startswith("notebooks/")}
    return [(numbers[p], p, labs[numbers[p]]) for p in pages]


_EQNO = re.compile(r'id="(equation-[^"]+)"[^>]*>\s*<span class="eqno">\(([^)<]*)\)')
_EQREF = re.compile(r'<a class="[^"]*\bdr-eqref\b[^"]*" href="([^"#]*)#(equation-[^"]+)"[^>]*>\(([^)<]*)\)</a>')


def test_chapters_and_equations_carry_their_numbers(built_site):
    """Both pages of chapter n are titled "n ..."; the derivation's equations are (n.k); every
    equation a lab cites shows, and links to, the number its derivation page shows."""
    problems, cited = [], 0
    for n, page, lab in _chapter_files():
        page_html = (built_site / f"{page}.html").read_text()
        lab_html = (built_site / f"{lab}.html").read_text()
        for doc, text in ((page, page_html), (lab, lab_html)):
            h1 = re.search(r"<h1>(.*?)<", text, re.S)
            if not h1 or not h1.group(1).strip().startswith(f"{n} "):
                problems.append(f"{doc}: heading {h1.group(1)[:40] if h1 else None!r} lacks the number {n}")
        numbers = dict(_EQNO.findall(page_html))
        if not numbers:
            problems.append(f"{page}: no numbered equations")
        bad = [v for v in numbers.values() if not re.fullmatch(rf"{n}\.\d+", v)]
        if bad:
            problems.append(f"{page}: equation numbers {bad[:3]} are not ({n}.k)")
        for href, anchor, shown in _EQREF.findall(lab_html):
            cited += 1
            target = (built_site / lab).parent / href
            target_numbers = dict(_EQNO.findall(target.read_text())) if target.is_file() else {}
            if target_numbers.get(anchor) != shown:
                problems.append(f"{lab}: cites ({shown}) for {anchor}, but {href} shows {target_numbers.get(anchor)!r}")
        prose = re.sub(r"<(pre|code|script|style)\b.*?</\1>", " ", lab_html, flags=re.S)  # code and outputs keep labels
        for label in re.findall(r"equation \(([a-z][\w:-]*)\)", re.sub(r"<[^>]+>", "", prose)):
            problems.append(f"{lab}: 'equation ({label})' was not turned into a number")
    assert cited > 0, "no lab cites an equation"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "query, chapter",
    [("ELBO", "book/diffusion/elbo-vae"), ("Robbins–Monro", "book/rl/stochastic-approximation"), ("RoPE", "book/attention/llama")],
)
def test_search_finds_a_chapter_by_a_term_it_derives(built_site, server, browser, query, chapter):
    """As a reader searches: open the search box from a page, type, press Enter, read the results."""
    page, errors, foreign = _open(browser, f"{server}/book/intro.html")
    page.locator("button.search-button__button:visible").first.click()
    box = page.locator("input[name='q']:visible").first
    box.wait_for(state="visible", timeout=10_000)
    box.fill(query)
    box.press("Enter")
    page.wait_for_url("**/search.html*", timeout=20_000)
    page.wait_for_function(
        "() => { const s = document.querySelector('#search-results'); return s && s.querySelectorAll('li').length > 0; }",
        timeout=30_000,
    )
    hrefs = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.getAttribute('href'))")
    page.close()
    top = [h.split("#")[0].removesuffix(".html") for h in hrefs[:5]]
    assert chapter in top, f"searching {query!r} gave {hrefs[:8]}, not {chapter} in the first five"
    assert not errors and not foreign, (errors, foreign)


def test_front_page_shows_the_map_and_the_reading_paths(built_site):
    html = (built_site / "book" / "intro.html").read_text()
    srcs = re.findall(r'<img[^>]+src="([^"]*book-map[^"]*\.svg)"', html)
    assert srcs, "the front page shows the map of the book"
    assert (built_site / "book" / srcs[0]).resolve().is_file(), f"the map image {srcs[0]} is in the site"
    for path in ("diffusion/elbo-vae.html", "rl/grpo.html", "attention/llama.html"):
        assert f'href="{path}"' in html, f"a reading path links to {path}"
