#!/usr/bin/env bash
# The static checks, run by run-tests.sh before the tests (and on their own: a quick check before
# a commit). Any finding fails. Configs: [tool.ruff] and [tool.mypy] in pyproject.toml.
#   ruff   the whole tree (`ruff check --fix .` applies the safe fixes)
#   mypy   shared/ and the render core
#   node   syntax of the viewer's ES modules, where Node.js is installed
#   tsc    the viewer's JavaScript type-checked from its JSDoc (webviewer/tsconfig.json), with the
#          TypeScript of installers/js (locked; `npm ci --prefix installers/js` installs it)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-${SIVR_VENV:-$repo/.venv}/bin/python}
cd "$repo"
echo "ruff check ."
"$python" -m ruff check --quiet .
echo "mypy ($("$python" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["mypy"]["files"]))'))"
"$python" -m mypy
if command -v node >/dev/null; then
    echo "node --check webviewer/static/js/*.js"
    for script in webviewer/static/js/*.js; do
        node --input-type=module --check <"$script" || { echo "syntax error in $script"; exit 1; }
    done
else
    echo "node not installed: the viewer's JavaScript syntax is not checked"
fi
tsc=installers/js/node_modules/.bin/tsc
if [ -x "$tsc" ]; then
    echo "tsc -p webviewer/tsconfig.json"
    "$tsc" -p webviewer/tsconfig.json
else
    echo "installers/js not installed (npm ci --prefix installers/js): the viewer's types are not checked"
fi
