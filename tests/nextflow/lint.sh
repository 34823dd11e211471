#!/usr/bin/env bash
# Strict-syntax lint of every Nextflow script (.nf) and config (.config) of a pipeline
# folder (and a Groovy syntax check of its nf-test files), with the Nextflow language server's compiler (no Nextflow runtime needed).
#
#   bash tests/nextflow/lint.sh [ROOT]      # ROOT defaults to the repository
#
# The language server jar comes from tests/nextflow/fetch_jar.sh (downloaded once).
# Exit status: 0 clean (warnings allowed), 1 on any error, 2 when Java is missing.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROOT="$(cd "${1:-$REPO}" && pwd)"

if ! command -v java >/dev/null 2>&1; then
  echo "nf-lint: java not found (Java 17+ is needed)" >&2
  exit 2
fi

JAR="$("$HERE/fetch_jar.sh")"

# every pipeline script and config, and the nf-test files (checked as Groovy)
mapfile -t FILES < <(cd "$ROOT" && find . \
  \( -path ./.git -o -path ./.venv -o -path ./.cache -o -path ./work -o -path ./.nextflow -o -path ./.nf-test \
     -o -path ./results -o -path ./node_modules \) -prune -o \
  -type f \( -name '*.nf' -o -name '*.config' -o -name '*.nf.test' \) -print | sort)

if [ "${#FILES[@]}" -eq 0 ]; then
  echo "nf-lint: no .nf or .config files under $ROOT" >&2
  exit 1
fi

cd "$ROOT"
exec java -Xshare:auto -XX:TieredStopAtLevel=1 -cp "$JAR" groovy.ui.GroovyMain "$HERE/NfLint.groovy" "$ROOT" "${FILES[@]}"
