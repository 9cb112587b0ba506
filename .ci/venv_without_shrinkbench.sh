#!/usr/bin/env bash
# Create a venv at $1 that sees this interpreter's installed packages (torch, numpy...) except
# every shrinkbench distribution, by linking them in one by one.
set -euo pipefail
venv=$1
python -m venv "$venv"
system_site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
venv_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for entry in "$system_site"/*; do
  name=$(basename "$entry")
  case "$name" in
    *shrinkbench*|*__editable__*|pip|pip-*|setuptools|setuptools-*|_distutils_hack|distutils-precedence.pth) continue ;;
  esac
  [ -e "$venv_site/$name" ] || ln -s "$entry" "$venv_site/$name"
done
