#!/usr/bin/env bash
# The Debian packages the tests need, installed when missing: chromium, the real browser
# that tests/train/test_viewer_browser.py opens the trajectory viewer in (driven by
# Playwright, which uses this system browser instead of downloading its own).
# Needs root and apt-get (as on CI); elsewhere it says what is missing and goes on, and
# the browser test skips (it fails only when CI is set).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_packages.sh: missing ${need[*]}; not root or no apt-get, so not" \
       "installing them (the browser test will skip)" >&2
  exit 0
fi
echo "install_system_packages.sh: apt-get install ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
  >/dev/null
