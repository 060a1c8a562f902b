# Derive & Run: `make book` builds the site, `make test` runs every test. Both set up .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
READY  := $(VENV)/.ready
PORT   ?= 8000
NB     ?=
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: help book pdf test-pdf serve test test-unit test-labs test-site refresh bench lint clean pin vendor release

help:
	@echo "make book     build the HTML book into _build/html (sets up .venv first)"
	@echo "make pdf      build the book as one PDF, _build/latex/derive-and-run.pdf (installs Debian's TeX first)"
	@echo "make test-pdf build the PDF and check its page count and table of contents"
	@echo "make serve    serve _build/html on http://127.0.0.1:$(PORT)"
	@echo "make test     run the whole test suite (unit, doctests, contract, labs, site)"
	@echo "make refresh  re-execute the labs in place (NB=notebooks/part/lab.ipynb for one)"
	@echo "make bench    run the benchmarks (prints tables; not a test)"
	@echo "make lint     ruff"
	@echo "make release VERSION=x.y.z  tag a release whose labs install minilib from that tag"
	@echo "make clean    remove build outputs (keeps .venv; 'make clean-all' removes it too)"

$(READY): requirements/torch.txt requirements/dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/torch.txt
	$(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

# MathJax is served from the site; without npm the build falls back to the CDN and says so.
vendor:
	@if [ -f node_modules/mathjax/es5/tex-mml-chtml.js ]; then :; \
	elif command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the book will load MathJax from a CDN (install Node.js to serve it locally)"; fi

book: $(READY) vendor
	$(BIN)/jupyter-book build . --warningiserror --keep-going --builder html
	@echo
	@echo "The book is in _build/html. View it with:  make serve   (http://127.0.0.1:$(PORT))"

# The PDF is not part of `make test` (TeX and a LaTeX run add about ten minutes to CI): run
# `make test-pdf` before a release.
pdf: $(READY) vendor
	bash tools/install-tex.sh
	$(BIN)/jupyter-book build . --builder pdflatex
	@echo "The PDF is _build/latex/derive-and-run.pdf"

test-pdf: pdf
	$(PYTEST) tests -q -m pdf

release: $(READY)
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=x.y.z"; exit 2; }
	$(PY) -m tools.release $(VERSION)

serve:
	@test -f _build/html/index.html || { echo "no _build/html yet: run 'make book' first"; exit 1; }
	@echo "Serving _build/html on http://127.0.0.1:$(PORT) (Ctrl-C to stop)"
	$(PYTHON) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

test: $(READY) vendor
	$(PYTEST) tests minilib --doctest-modules -q -m "not slow and not pdf"
	$(PY) -m tools.run_labs
	$(PYTEST) tests -q -m slow

refresh: $(READY)
	$(PY) -m tools.refresh $(NB)

bench: $(READY)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(READY)
	$(BIN)/ruff check minilib tests tools bench notebooks

pin: $(READY)
	@(echo "# The book/test toolchain, pinned (pip freeze of a working .venv; torch is pinned in torch.txt)."; \
	  echo "# Regenerate: make pin.  environment.yml must agree (tests/test_env.py)."; \
	  $(PY) -m pip freeze --exclude-editable | grep -viE '^(torch|derive-and-run-minilib)[=@ ]') > requirements/dev.txt
	@echo "requirements/dev.txt updated; update environment.yml to match"

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

clean-all: clean
	rm -rf $(VENV) node_modules
