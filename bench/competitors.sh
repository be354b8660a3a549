#!/usr/bin/env bash
# Installs the gateways `make bench` compares against, into a throwaway cache outside the
# repo (nothing from them is committed): LiteLLM's proxy in its own virtualenv, Portkey's
# gateway with npm, and wrk from the distribution's packages when it is missing.
# Each step is independent: a competitor that cannot be installed is reported and skipped,
# and the bench then says so in its table.
# Usage: bench/competitors.sh [litellm|portkey|wrk]...   (no argument: all three)
set -u
CACHE="${UMG_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/umg-bench}"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"   # newest whose [proxy] extras install here
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
HONO_NODE_SERVER="${HONO_NODE_SERVER:-2.1.9}"   # the default pick breaks Portkey's streams
mkdir -p "$CACHE"

install_litellm() {
    local venv="$CACHE/litellm-$LITELLM_VERSION"
    if [ -x "$venv/bin/litellm" ]; then echo "litellm: $venv (present)"; return 0; fi
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install -q --upgrade pip || return 1
    "$venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" || return 1
    echo "litellm: $venv"
}

install_portkey() {
    local dir="$CACHE/portkey-$PORTKEY_VERSION"
    if [ -f "$dir/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
        echo "portkey: $dir (present)"; return 0
    fi
    type -P npm >/dev/null || { echo "portkey: npm is missing" >&2; return 1; }
    mkdir -p "$dir"
    cat > "$dir/package.json" <<JSON
{
  "name": "umg-bench-portkey",
  "private": true,
  "dependencies": {"@portkey-ai/gateway": "$PORTKEY_VERSION"},
  "overrides": {"@hono/node-server": "$HONO_NODE_SERVER"}
}
JSON
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error) || return 1
    echo "portkey: $dir"
}

install_wrk() {
    if type -P wrk >/dev/null; then echo "wrk: $(type -P wrk)"; return 0; fi
    if [ "$(id -u)" = 0 ] && type -P apt-get >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq && apt-get -o DPkg::Lock::Timeout=300 install -y -qq wrk >/dev/null || return 1
        echo "wrk: $(type -P wrk)"
    else
        echo "wrk: missing (install the distribution's wrk package)" >&2; return 1
    fi
}

status=0
for what in "${@:-litellm portkey wrk}"; do
    for step in $what; do
        "install_$step" || { echo "$step: could not be installed; the bench skips it" >&2; status=1; }
    done
done
exit $status
