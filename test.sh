#!/usr/bin/env bash
# Runs every test of gchd. Needs Go; starts (or installs, on Debian, as root)
# the PostgreSQL server the storage tests run against, unless
# GCHD_TEST_POSTGRES names another server or is "skip".
# Extra arguments go to `go test` (e.g. ./test.sh -run TestAddGroup ./chat/).
set -euo pipefail
cd "$(dirname "$0")"

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_postgres() {
	[ -n "${GCHD_TEST_POSTGRES:-}" ] && return 0
	if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
		if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
			echo "test.sh: installing PostgreSQL" >&2
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
		else
			echo "test.sh: PostgreSQL is not installed; install it or set GCHD_TEST_POSTGRES" >&2
			exit 1
		fi
	fi
	if ! pg_ready; then
		echo "test.sh: starting PostgreSQL" >&2
		pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
		for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
	fi
	pg_ready || { echo "test.sh: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
	# The tests connect as postgres without a password (trust on loopback).
	if ! psql -h 127.0.0.1 -U postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
		echo "test.sh: cannot connect as postgres to 127.0.0.1; allowing trust for loopback" >&2
		hba=$(su postgres -c "psql -Atc 'SHOW hba_file'")
		sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
		su postgres -c "psql -Atc 'SELECT pg_reload_conf()'" >/dev/null
	fi
}

# ensure_packages installs, as root on Debian, the Debian package of each
# "command package" pair whose command is missing; the tests that need a
# missing one skip, loudly.
ensure_packages() {
	what=$1
	shift
	missing=""
	while [ $# -gt 1 ]; do
		if ! command -v "$1" >/dev/null 2>&1; then
			case " $missing " in *" $2 "*) ;; *) missing="$missing $2" ;; esac
		fi
		shift 2
	done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "test.sh: installing$missing" >&2
		apt-get update -qq || true
		for pkg in $missing; do
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null ||
				echo "test.sh: WARNING: could not install $pkg; $what will be SKIPPED" >&2
		done
	else
		echo "test.sh: WARNING: not root or no apt-get; not installed:$missing; $what will be SKIPPED" >&2
	fi
}

# SIPp (sip-tester) takes part in the end-to-end tests as a third-party user
# agent; SIPVicious (svwar, svcrack) attacks the real server as scanners do.
ensure_tools() {
	ensure_packages "their tests" sipp sip-tester svwar sipvicious svcrack sipvicious
}

# Real softphones, Debian 12's baresip 1.0 (package baresip) and linphonec
# 5.1 (package linphone-cli), register, chat and call through gchd in the
# app tests, headless.
ensure_softphones() {
	ensure_packages "the tests with real softphones" baresip baresip linphonec linphone-cli
}

# Headless Chromium (Debian packages chromium and chromium-driver) runs JsSIP
# and an EventSource page in tests/browser.
ensure_browser() {
	ensure_packages "the browser tests" chromium chromium chromedriver chromium-driver
}

ensure_postgres
ensure_tools
ensure_softphones
ensure_browser
if [ $# -eq 0 ]; then
	set -- ./...
fi
# go test's JSON goes through tests/summary, which prints what go test
# prints without it (each package's ok or FAIL line, failed tests' output)
# and ends with every skipped test and its reason: a tool, a corpus or a
# privilege that was missing is listed, not passed over. The exit code is
# go test's. Without the summarizer (it does not build), plain go test.
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
if ! go build -o "$summary" ./tests/summary; then
	echo "test.sh: WARNING: tests/summary does not build; no summary of skipped tests" >&2
	exec go test -race -count=1 -timeout 20m "$@"
fi
set +e
go test -race -count=1 -timeout 20m -json "$@" | "$summary"
status=("${PIPESTATUS[@]}")
set -e
[ "${status[1]}" = 0 ] || echo "test.sh: WARNING: the summary of skipped tests failed" >&2
exit "${status[0]}"
