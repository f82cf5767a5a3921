#!/usr/bin/env bash
# Headless Chromium from Debian's packages, for the operator console's browser test
# (examples/console, driven from Go with chromedp).
#
#   deploy/local/chromium.sh install|path|version
#
#   install  install Debian's chromium with apt-get when no chromium is on the PATH (root only),
#            without the recommended packages (no desktop, audio or printing services).
#            Idempotent: a second install only checks.
#   path     print the browser the test runs ($EXACTLY_CHROMIUM, or chromium on the PATH).
#   version  print its version.
#
# The test runs it headless with --no-sandbox (CI runs as root); nothing is started here.
set -euo pipefail

log() { printf '[chromium] %s\n' "$*" >&2; }
die() { printf '[chromium] ERROR: %s\n' "$*" >&2; exit 1; }

browser() {
	if [ -n "${EXACTLY_CHROMIUM:-}" ]; then
		echo "$EXACTLY_CHROMIUM"
		return 0
	fi
	command -v chromium || command -v chromium-browser || return 1
}

install() {
	if b="$(browser)"; then
		return 0
	fi
	[ "$(id -u)" = 0 ] || die "chromium is not installed; run as root or: apt-get install -y --no-install-recommends chromium"
	log "chromium missing: installing Debian's package with apt-get"
	local t0=$SECONDS
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends chromium >/dev/null
	b="$(browser)" || die "apt-get install chromium did not put chromium on the PATH"
	log "installed $("$b" --version 2>/dev/null) in $((SECONDS - t0))s"
}

case "${1:-}" in
install) install ;;
path) browser || die "no chromium: run deploy/local/chromium.sh install" ;;
version) "$(browser || die "no chromium: run deploy/local/chromium.sh install")" --version ;;
*)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit 2
	;;
esac
