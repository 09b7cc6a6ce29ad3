# Shared by scripts/dev, scripts/test and scripts/docs: virtual environments with the pinned dependencies.
# Re-installs only when pyproject.toml or the constraints file changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
export NO_MKDOCS_2_WARNING=1

# ensure_venv [VENV_DIR [PYTHON [EXTRAS [CONSTRAINTS]]]]: .venv from $PYTHON with the test and docs
# extras, pinned by constraints.txt, by default. constraints-lowest.txt pins the lowest versions
# pyproject.toml allows (the .venv-lowest smoke run of scripts/test).
ensure_venv() {
    local venv="${1:-$VENV}" python="${2:-$PYTHON_BIN}" extras="${3:-test,docs}" constraints="${4:-constraints.txt}"
    local stamp want
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/$constraints" | sha256sum | cut -d' ' -f1) $extras"
    stamp="$venv/.rsd-installed"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    echo ">> creating $venv with pinned dependencies ($constraints)" >&2
    if [[ ! -x "$venv/bin/python" ]]; then
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -c "$ROOT/$constraints" -e "$ROOT[$extras]" >&2
    "$venv/bin/python" -m pip check >&2
    echo "$want" > "$stamp"
}

# find_python 3.12: a working python3.12 on PATH, else one installed by pyenv; empty when there is none.
find_python() {
    local version="$1" candidate
    for candidate in "python$version" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version"; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import venv' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
}

ensure_chromium() {
    # Debian's Chromium drives the browser test (no browser downloads are possible here).
    if command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        echo ">> installing Debian chromium for the browser test" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
    else
        echo "error: the browser test needs Debian's chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
}

ensure_s3rver() {
    # s3rver (npm, pinned in tests/s3rver/package-lock.json) into .test-tools/s3rver: the S3 server
    # without ListMultipartUploads/AbortMultipartUpload that the compatibility tests run on.
    local dest="$ROOT/.test-tools/s3rver" want stamp
    want="$(cat "$ROOT/tests/s3rver/package.json" "$ROOT/tests/s3rver/package-lock.json" | sha256sum | cut -d' ' -f1)"
    stamp="$dest/.rsd-installed"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$dest/node_modules/s3rver/bin/s3rver.js" ]]; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: the s3rver tests need node and npm (https://nodejs.org, or: sudo apt-get install nodejs npm)" >&2
        exit 1
    fi
    echo ">> installing s3rver (npm ci, tests/s3rver/package-lock.json) into $dest" >&2
    mkdir -p "$dest"
    cp "$ROOT/tests/s3rver/package.json" "$ROOT/tests/s3rver/package-lock.json" "$dest/"
    (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" > "$stamp"
}

ensure_postgres() {
    # Debian's PostgreSQL server (initdb, postgres) for the production-shape stack (scripts/prod-shape,
    # tests/test_e2e_production.py): the Dagster instance's storage. tests/prod_shape/postgres.py runs
    # a private cluster on a free port; nothing is configured system-wide.
    if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        echo ">> installing Debian postgresql for the production-shape stack" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    else
        echo "error: the production-shape stack needs PostgreSQL's server: sudo apt-get install postgresql" >&2
        exit 1
    fi
}
