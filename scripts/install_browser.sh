#!/usr/bin/env bash
# Install what tests/test_browser.py needs beyond the dev extra (which brings `playwright`): Debian's Chromium.
#
# Usage: scripts/install_browser.sh
#
# Idempotent: apt runs only when /usr/bin/chromium is missing. Playwright drives this system Chromium
# (executable_path=/usr/bin/chromium); we never run `playwright install`, which downloads its own browser. Without root or apt, the script says
# so and exits 0: the browser test then skips with a reason.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

log() { echo "[install_browser] $*"; }

if [[ -x "$CHROMIUM" ]]; then
    log "chromium present: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
elif command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO="sudo -n"
        else
            log "chromium missing and no root/sudo to install it; the browser test will skip"
            SUDO=skip
        fi
    fi
    if [[ "$SUDO" != skip ]]; then
        log "installing chromium with apt-get"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
    fi
else
    log "chromium missing and apt-get not found: install Chromium at $CHROMIUM; the browser test will skip"
fi

