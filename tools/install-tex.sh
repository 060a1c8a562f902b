#!/usr/bin/env bash
# Debian's TeX packages for `make pdf` (xelatex, latexmk and the LaTeX packages Sphinx uses).
# Installs only what is missing; needs root or sudo. About 150 MB from Debian's mirrors.
set -euo pipefail
PKGS="texlive-latex-extra texlive-xetex latexmk texlive-fonts-recommended texlive-plain-generic lmodern fonts-freefont-otf"
if command -v xelatex >/dev/null && command -v latexmk >/dev/null && kpsewhich fncychap.sty >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $PKGS
