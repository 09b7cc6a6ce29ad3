# Shared by scripts/dev and scripts/test: make .venv with the pinned dependencies.
# Re-installs only when pyproject.toml or constraints.txt changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"

ensure_venv() {
    local stamp want
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
    stamp="$VENV/.rsd-installed"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    echo ">> creating $VENV with pinned dependencies (constraints.txt)" >&2
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$PYTHON_BIN" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test]" >&2
    "$VENV/bin/python" -m pip check >&2
    echo "$want" > "$stamp"
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
