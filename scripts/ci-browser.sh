#!/usr/bin/env bash
# Installs the browser of the Batches view's browser test (tests/ui): Chromium and its driver from
# the distribution's packages (Debian/Ubuntu), never a downloaded browser. Run as root, once per
# machine; CI runs it before `make test`. Without it the browser test is skipped locally and fails
# under CI=true.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium is installed: $(chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "scripts/ci-browser.sh installs packages with apt-get: run it as root" >&2
    exit 1
  fi
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "installed $(chromium --version)"
