"""Claims are computed, not typed: find measured-looking numbers in prose and check their source.

A *measured-looking number* is one of

* a percentage (``20.1%``, ``30–40 %``);
* a ratio with ``×`` (``3.7×``, ``2–2.5×``), but not a size such as ``3×3``;
* a decimal number with a unit (``10.4 ms``, ``1.5 GB``, ``0.3 nats``);
* a time (``45 s``, ``8.3 min``);
* a decimal with two or more digits after the point (``5.46``, ``0.064``) or in scientific
  notation (``4.9e-5``), which is how training results and errors are written.

Constants are written as mathematics (``$\\gamma = 0.99$``, ``$2\\times$``), so everything inside
``$...$`` and ``$$...$$`` is ignored, and so are inline code, code blocks, MyST roles (``{eq}``,
``{glue:text}``, ...), directive options (``:width: 80%``), HTML tags, link targets and version
strings (``2.13.0``). A number in a sentence that cites a paper (``{cite}``) is a published value.

The rules the test suite enforces (``tests/test_claims.py``):

* **lab markdown**: every measured-looking number appears, with the same value, in a visible
  output of the same lab (a percentage may also appear as the fraction);
* **derivation pages**: no measured-looking number is typed at all; it is pasted from the lab
  with ``{glue:text}`` (see :func:`minilib.glue`).

Usage: ``python -m tools.claims [files...]`` lists the violations (default: every chapter).
"""

from __future__ import annotations

import html
import json
import re
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

_NUM = r"\d+(?:\.\d+)?"
_RANGE = rf"{_NUM}(?:\s?(?:–|-|to)\s?{_NUM})?"
_UNITS = (
    r"ms|µs|μs|us|ns|s|sec|seconds?|min|minutes?|h|hours?|"
    r"[KMGT]i?B|kB|bytes?|GFLOP/s|[KMGT]?FLOPs?|it/s|steps?/s|tokens?/s|nats?|bits?|dB"
)
_TIME_UNITS = r"ms|µs|μs|us|ns|s|sec|seconds?|min|minutes?"
_PATTERNS = [
    ("percentage", re.compile(rf"(?<![\w.]){_RANGE}\s?%")),
    ("ratio", re.compile(rf"(?<![\w.]){_RANGE}\s?×(?!\s?\d)")),
    ("decimal with a unit", re.compile(rf"(?<![\w.])\d+\.\d+(?:\s?(?:–|-|to)\s?{_NUM})?\s?(?:{_UNITS})(?![\w/])")),
    ("time", re.compile(rf"(?<![\w.]){_RANGE}\s?(?:{_TIME_UNITS})(?![\w/])")),
    ("precise decimal", re.compile(r"(?<![\w.])\d+\.\d{2,}(?![\w.]|\.\d)")),
    ("scientific", re.compile(r"(?<![\w.])\d+(?:\.\d+)?e[-+]?\d+(?![\w.])")),
]
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")

# What is removed before scanning: each is replaced by a space of the same length-ish.
_STRIP = [
    re.compile(r"^(```|~~~)[^\n]*\n.*?^\1\s*$", re.S | re.M),  # fenced blocks (code, directives' bodies stay: see below)
    re.compile(r"\$\$.*?\$\$", re.S),  # display math
    re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S),  # amsmath environments
    re.compile(r"(?<![\\$])\$(?!\$)(?:[^$\\\n]|\\.|\n(?![ \t]*\n))+?\$"),  # inline math (may wrap a line)
    re.compile(r"\{[a-zA-Z][\w:-]*\}`[^`]*`"),  # MyST roles: {eq}`...`, {glue:text}`...`, {cite}`...`
    re.compile(r"``[^`]+``|`[^`\n]+`"),  # inline code
    re.compile(r"^\s*:[\w-]+:.*$", re.M),  # directive options
    re.compile(r"^\([\w:-]+\)=\s*$", re.M),  # MyST targets
    re.compile(r"<[^>\n]+>"),  # HTML tags and autolinks
    re.compile(r"\]\([^)\s]*\)"),  # link targets
    re.compile(r"https?://\S+"),  # bare URLs
    re.compile(r"(?<![\w.])\d+\.\d+\.\d+(?:\.\w+)*"),  # version strings
]
_DIRECTIVE_FENCE = re.compile(r"^(```+|~~~+|:::+)\s*\{[\w:-]+\}.*$", re.M)
_CITE = re.compile(r"\{cite(?::\w+)?\}`")


@dataclass(frozen=True)
class Claim:
    """A measured-looking number found in prose."""

    kind: str
    text: str  # the matched text, e.g. "20.1%"
    numbers: tuple[str, ...]  # the numbers in it, e.g. ("20.1",)
    sentence: str  # the sentence it stands in, for the error message

    def __str__(self) -> str:
        return f"{self.text!r} ({self.kind}) in: {self.sentence.strip()[:160]!r}"


def _blank(match: re.Match) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))


def prose(text: str) -> str:
    """The text with mathematics, code, roles, options, tags and links blanked out.

    Fenced directives (```` ```{note} ````, ``:::{exercise}``) keep their body, which is prose;
    fenced code blocks are removed.
    """
    text = _DIRECTIVE_FENCE.sub(lambda m: " " * len(m.group(0)), text)
    for pat in _STRIP:
        text = pat.sub(_blank, text)
    return text


def _sentences(text: str) -> list[tuple[int, int, str]]:
    out, start = [], 0
    for m in re.finditer(r"(?<=[.!?:])\s+(?=[A-Z*(\[])|\n\s*\n", text):
        out.append((start, m.start(), text[start : m.start()]))
        start = m.end()
    out.append((start, len(text), text[start:]))
    return out


def find_claims(text: str) -> list[Claim]:
    """Measured-looking numbers in markdown ``text`` (outside math, code, roles and links).

    A number in a sentence that cites a paper with ``{cite}`` counts as a published value and
    is not returned.

    >>> [c.text for c in find_claims("Packing is 53% faster, $\\\\gamma = 0.99$, a 3×3 kernel.")]
    ['53%']
    >>> [c.text for c in find_claims("The error was 4.9e-5 after 8.3 min.")]
    ['4.9e-5', '8.3 min']
    """
    raw_sentences = _sentences(text)
    cited_spans = [(a, b) for a, b, s in raw_sentences if _CITE.search(s)]
    clean = prose(text)
    claims: list[Claim] = []
    taken: list[tuple[int, int]] = []
    for kind, pat in _PATTERNS:
        for m in pat.finditer(clean):
            a, b = m.span()
            if any(a < tb and ta < b for ta, tb in taken):
                continue
            if any(sa <= a < sb for sa, sb in cited_spans):
                continue
            taken.append((a, b))
            sentence = next((s for sa, sb, s in raw_sentences if sa <= a < sb), m.group(0))
            nums = tuple(_NUMBER.findall(m.group(0)))
            claims.append(Claim(kind, m.group(0).strip(), nums, sentence))
    claims.sort(key=lambda c: text.find(c.text))
    return claims


def _value(s: str) -> Decimal | None:
    try:
        return Decimal(s).normalize()
    except InvalidOperation:
        return None


def output_text(nb: dict) -> str:
    """Everything a reader sees printed by a lab's code cells: streams, plain text, HTML, markdown."""
    parts: list[str] = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(_join(out.get("text", "")))
            elif out.get("output_type") in ("execute_result", "display_data"):
                if "scrapbook" in out.get("metadata", {}):
                    continue  # glue data is not shown in the lab
                data = out.get("data", {})
                for mime in ("text/plain", "text/markdown"):
                    if mime in data:
                        parts.append(_join(data[mime]))
                if "text/html" in data:
                    parts.append(html.unescape(re.sub(r"<[^>]+>", " ", _join(data["text/html"]))))
            elif out.get("output_type") == "error":
                parts.append(_join(out.get("evalue", "")))
    return "\n".join(parts)


def _join(x) -> str:
    return "".join(x) if isinstance(x, list) else str(x)


def printed_values(text: str) -> set[Decimal]:
    """The numeric values printed in ``text`` (``3.70`` and ``3.7`` are the same value)."""
    vals = set()
    for tok in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text):
        v = _value(tok.lstrip("-"))
        if v is not None:
            vals.add(v)
    return vals


def unsupported_in_lab(nb: dict) -> list[Claim]:
    """Claims in a lab's markdown cells whose numbers no output of the lab prints."""
    printed = printed_values(output_text(nb))
    bad = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        for claim in find_claims(_join(cell.get("source", ""))):
            for num in claim.numbers:
                v = _value(num)
                alternatives = {v} if claim.kind != "percentage" else {v, (v / 100).normalize()}
                if v is not None and not (alternatives & printed):
                    bad.append(claim)
                    break
    return bad


def typed_in_page(text: str) -> list[Claim]:
    """Claims typed into a derivation page: every one is a violation (paste them with glue)."""
    return find_claims(text)


_GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]*)`")


def glued_keys(nb: dict) -> set[str]:
    """The names a lab's committed outputs glue (with :func:`minilib.glue` or MyST-NB's ``glue``)."""
    keys = set()
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            scrap = out.get("metadata", {}).get("scrapbook")
            if scrap and "name" in scrap:
                keys.add(scrap["name"])
    return keys


def broken_glue(page: Path) -> list[str]:
    """``{glue:...}`` roles on a page whose lab, key or format spec is missing."""
    problems = []
    for target in _GLUE_ROLE.findall(page.read_text()):
        if "::" not in target:
            problems.append(f"{target!r}: name the lab, as `../../notebooks/part/lab.ipynb::key:fmt`")
            continue
        path, rest = target.split("::", 1)
        if ":" not in rest:
            problems.append(f"{target!r}: a format spec is required after path::key (e.g. `::key:.2f` or `::key:s`)")
            continue
        key = rest.rsplit(":", 1)[0]
        lab = (page.parent / path).resolve()
        if not lab.exists():
            problems.append(f"{target!r}: {path} does not exist")
            continue
        if key not in glued_keys(json.loads(lab.read_text())):
            problems.append(f"{target!r}: the committed outputs of {path} glue no {key!r}")
    return problems


def chapters() -> list[tuple[str, str]]:
    """(derivation page, lab) paths, relative to the repository, for every chapter in ``_toc.yml``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    out = []
    for part in toc["parts"]:
        files = [c["file"] for c in part["chapters"]]
        pages = [f for f in files if f.startswith("book/")]
        labs = {Path(f).relative_to("notebooks").as_posix(): f for f in files if f.startswith("notebooks/")}
        for p in pages:
            key = Path(p).relative_to("book").as_posix()
            if key in labs:
                out.append((f"{p}.md", f"{labs[key]}.ipynb"))
    return out


def report(paths: list[str] | None = None) -> list[str]:
    problems = []
    for page, lab in chapters():
        if paths and page not in paths and lab not in paths:
            continue
        for problem in broken_glue(ROOT / page):
            problems.append(f"{page}: glue {problem}")
        for claim in typed_in_page((ROOT / page).read_text()):
            problems.append(f"{page}: typed measured number {claim}; paste it from the lab with {{glue:text}}")
        nb = json.loads((ROOT / lab).read_text())
        for claim in unsupported_in_lab(nb):
            problems.append(f"{lab}: {claim} is not printed by any output of the lab")
    return problems


if __name__ == "__main__":
    found = report(sys.argv[1:] or None)
    print("\n".join(found) or "no unsupported claims")
    sys.exit(1 if found else 0)
