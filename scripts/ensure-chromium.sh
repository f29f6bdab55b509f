#!/usr/bin/env bash
# The end-to-end tests drive Debian's Chromium at /usr/bin/chromium (playwright cannot download a
# browser here). Install it when missing and we may; otherwise say exactly what to run.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's chromium for the browser tests…" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "The browser tests need /usr/bin/chromium: run  sudo apt-get install -y chromium" >&2
exit 1
