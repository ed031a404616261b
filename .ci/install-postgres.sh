#!/usr/bin/env bash
# Installs PostgreSQL 15 (server binaries: initdb, pg_ctl) if it is missing, so the
# store tests can start a throwaway cluster on 127.0.0.1. Safe to re-run.
#
#   bash .ci/install-postgres.sh
#
# The tests use TRAINPOOL_TEST_PG_URL instead when it is set, and skip the PostgreSQL
# variants (saying why) when neither works.
set -euo pipefail

have_initdb() {
    command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_initdb; then
    echo "postgresql: already installed ($(ls -d /usr/lib/postgresql/*/ 2>/dev/null | xargs -n1 basename | tr '\n' ' '))"
    exit 0
fi
command -v apt-get >/dev/null || { echo "error: no initdb and no apt-get: install PostgreSQL 15 by hand" >&2; exit 1; }
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "error: need root (or sudo) to install postgresql" >&2; exit 1; }
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -qq
# Debian 12's `postgresql` is version 15; the cluster it creates is not used (tests make their own).
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql
have_initdb || { echo "error: postgresql installed but initdb not found" >&2; exit 1; }
echo "postgresql: installed"
