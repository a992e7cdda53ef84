#!/usr/bin/env bash
# Checks the deployment material in deploy/ against a real gchd:
#
#  1. promtool: the alert rules, their unit tests and the Prometheus config;
#  2. systemd-analyze verify and security on the unit (where installed);
#  3. the dashboard is valid JSON, deploy/gchd.yaml a valid configuration,
#     and the scripts pass shellcheck (where installed);
#  4. a real scrape: builds gchd, starts it on free ports with a throwaway
#     SQLite database, drives SIP and API traffic (a registered phone that
#     receives group messages, a failed login, a ban, a database error),
#     starts a real Prometheus scraping it every second with alerts.yml
#     loaded, and checks through Prometheus' HTTP API that the target is up,
#     that gchd_ series arrive, that every dashboard query evaluates and
#     that every alert rule evaluates without error;
#  5. every metric name that gchd.json and alerts.yml use exists in gchd's
#     /metrics output (histograms: _bucket, _sum, _count);
#  6. SIGHUP reloads and SIGTERM stops gchd within shutdown.grace.
#
# Needs go, python3, curl, promtool and prometheus (Debian: prometheus);
# systemd-analyze is optional. Everything it starts is stopped and its
# temporary directory removed on exit (KEEP=1 keeps the directory).
#
# usage: deploy/check.sh            environment: MAX_EXPOSURE (default 2.0)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$ROOT/deploy
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
DOMAIN=localhost

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gchd-check.XXXXXX")
PIDS=()
FAILED=1

log() { printf '== %s\n' "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	for pid in "${PIDS[@]}"; do
		# Give each up to 10 s, then force it.
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ $FAILED == 1 ]]; then
		for f in gchd.log prometheus.log phone.log; do
			if [[ -s $WORK/$f ]]; then
				printf -- '--- last lines of %s\n' "$f" >&2
				tail -n 20 "$WORK/$f" >&2
			fi
		done
	fi
	if [[ ${KEEP:-} == 1 ]]; then
		echo "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in go python3 curl promtool prometheus; do
	command -v "$tool" >/dev/null || fail "$tool is not installed"
done

# ------------------------------------------------------------------ promtool
log "promtool check rules"
promtool check rules "$DEPLOY/prometheus/alerts.yml"
log "promtool test rules"
promtool test rules "$DEPLOY/prometheus/alerts_test.yml"
log "promtool check config"
promtool check config "$DEPLOY/prometheus/prometheus.yml"

# ------------------------------------------------------------------ build
log "go build"
(cd "$ROOT" && go build -ldflags "-X gchd/app.Version=deploy-check" -o "$WORK/gchd" .)
GCHD=$WORK/gchd

# ------------------------------------------------------------------ systemd
if command -v systemd-analyze >/dev/null; then
	log "systemd-analyze verify"
	# verify wants ExecStart's binary to exist: point it at the fresh build.
	mkdir -p "$WORK/systemd"
	sed "s#/usr/local/bin/gchd#$GCHD#g" "$DEPLOY/gchd.service" >"$WORK/systemd/gchd.service"
	systemd-analyze verify "$WORK/systemd/gchd.service"
	log "systemd-analyze security"
	exposure=$(systemd-analyze security --offline=yes "$WORK/systemd/gchd.service" 2>&1 |
		sed -n 's/.*Overall exposure level for gchd.service: \([0-9.]*\).*/\1/p')
	[[ -n $exposure ]] || fail "systemd-analyze security gave no exposure level"
	echo "overall exposure level: $exposure (at most $MAX_EXPOSURE accepted)"
	python3 -c "import sys; sys.exit(0 if float('$exposure') <= float('$MAX_EXPOSURE') else 1)" ||
		fail "exposure $exposure is above $MAX_EXPOSURE"
	log "systemd-analyze verify gchd@node1 (the cluster template)"
	sed "s#/usr/local/bin/gchd#$GCHD#g" "$DEPLOY/gchd@.service" >"$WORK/systemd/gchd@node1.service"
	systemd-analyze verify "$WORK/systemd/gchd@node1.service"
else
	log "systemd-analyze not installed: unit not verified"
fi

# ------------------------------------------------------------------ dashboard
log "dashboard JSON"
python3 - "$DEPLOY/grafana/gchd.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
panels = [p for p in d["panels"] if p["type"] != "row"]
assert any(v["name"] == "DS_PROMETHEUS" for v in d["templating"]["list"]), "no DS_PROMETHEUS variable"
for p in panels:
    assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    assert p["targets"], p["title"]
print("%d panels, %d queries" % (len(panels), sum(len(p["targets"]) for p in panels)))
EOF

log "deploy/gchd.yaml is a valid configuration"
"$GCHD" migrate -config "$DEPLOY/gchd.yaml" -database "sqlite:$WORK/config-check.db" >/dev/null

if command -v shellcheck >/dev/null; then
	log "shellcheck"
	shellcheck "$DEPLOY/check.sh" "$DEPLOY/sqlite-to-postgres.sh" "$DEPLOY/gchd-admin"
fi

# ------------------------------------------------------------------ helpers
# free_port prints a port free for TCP and UDP on 127.0.0.1.
free_port() {
	python3 - <<'EOF'
import socket
while True:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    t.close(); u.close()
    print(port)
    break
EOF
}

# wait_for URL SECONDS: until URL answers 2xx.
wait_for() {
	local i
	for i in $(seq $(($2 * 10))); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# api LOGIN PASSWORD GM PM: one /gch.ashx call; prints the HTTP status,
# then the body.
api() {
	curl -sS -m 30 -o "$WORK/api.body" -w '%{http_code}' -u "$1:$2" "$BASE/gch.ashx" \
		--data-urlencode "gm=$3" --data-urlencode "pm=$4"
	echo
	cat "$WORK/api.body"
	echo
}

# promql EXPR: the JSON answer of an instant query.
promql() {
	curl -fsS -G "$PROM/api/v1/query" --data-urlencode "query=$1"
}

# prom_value EXPR: the value of the first sample of an instant query, or "".
prom_value() {
	promql "$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}

# ------------------------------------------------------------------ gchd
SIP_PORT=$(free_port)
HTTP_PORT=$(free_port)
PROM_PORT=$(free_port)
BASE=http://127.0.0.1:$HTTP_PORT
PROM=http://127.0.0.1:$PROM_PORT
export GCHD_DATABASE=sqlite:$WORK/gchd.db GCHD_DOMAIN=$DOMAIN

log "accounts"
printf 'alice-pw\n' | "$GCHD" accounts add alice -display-name Alice
printf 'bob-pw\n' | "$GCHD" accounts add bob -display-name Bob

log "start gchd (SIP 127.0.0.1:$SIP_PORT, HTTP $BASE)"
cat >"$WORK/gchd.yaml" <<EOF
sip:
  addr: 127.0.0.1:$SIP_PORT
http:
  addr: 127.0.0.1:$HTTP_PORT
limits:
  # Low, so that the check can trip a ban.
  auth_failures: 3
log:
  format: json
shutdown:
  grace: 5s
EOF
"$GCHD" -config "$WORK/gchd.yaml" >"$WORK/gchd.log" 2>&1 &
GCHD_PID=$!
PIDS+=("$GCHD_PID")
wait_for "$BASE/readyz" 20 || fail "gchd did not become ready"
curl -fsS "$BASE/healthz"
curl -fsS "$BASE/readyz"

# ------------------------------------------------------------------ prometheus
log "start prometheus ($PROM)"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $DEPLOY/prometheus/alerts.yml
scrape_configs:
  - job_name: gchd
    static_configs:
      - targets: ["127.0.0.1:$HTTP_PORT"]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus" \
	--web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PIDS+=("$!")
wait_for "$PROM/-/ready" 30 || fail "prometheus did not become ready"

# ------------------------------------------------------------------ traffic
log "SIP phone of bob registers"
cat >"$WORK/phone.py" <<'EOF'
# A minimal SIP phone over UDP: registers with digest authentication (after
# one attempt with a wrong password), sends OPTIONS, then answers every
# request 200 until its time is up.
import hashlib, random, socket, sys, time

host, port, domain, login, password, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.settimeout(5)
me = "127.0.0.1:%d" % sock.getsockname()[1]
cseq = 0

def parse(data):
    lines = data.decode("utf-8", "replace").split("\r\n\r\n", 1)[0].split("\r\n")
    return lines[0], [(k.strip(), v.strip()) for k, _, v in (l.partition(":") for l in lines[1:])]

def header(headers, *names):
    for k, v in headers:
        if k.lower() in names:
            return v
    return None

def request(method, call_id, extra=()):
    global cseq
    cseq += 1
    lines = ["%s sip:%s SIP/2.0" % (method, domain),
             "Via: SIP/2.0/UDP %s;branch=z9hG4bK%x;rport" % (me, random.getrandbits(48)),
             "Max-Forwards: 70",
             "From: <sip:%s@%s>;tag=%x" % (login, domain, random.getrandbits(32)),
             "To: <sip:%s@%s>" % (login, domain),
             "Call-ID: " + call_id, "CSeq: %d %s" % (cseq, method),
             "Contact: <sip:%s@%s>" % (login, me), "Expires: 600"] + list(extra) + ["Content-Length: 0"]
    sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (host, port))
    while True:
        first, headers = parse(sock.recvfrom(65535)[0])
        if first.startswith("SIP/2.0 ") and int(first.split()[1]) >= 200 and header(headers, "cseq") == "%d %s" % (cseq, method):
            return int(first.split()[1]), headers

def register(password):
    call_id = "%x@check" % random.getrandbits(64)
    code, headers = request("REGISTER", call_id)
    if code != 401:
        return code
    chal = [v for k, v in headers if k.lower() == "www-authenticate" and "MD5" in v][0]
    p = dict((k.strip(), v.strip().strip('"')) for k, _, v in (x.partition("=") for x in chal[7:].split(",")))
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()
    uri, cnonce = "sip:" + domain, "%x" % random.getrandbits(64)
    ha1, ha2 = md5("%s:%s:%s" % (login, p["realm"], password)), md5("REGISTER:" + uri)
    response = md5(":".join([ha1, p["nonce"], "00000001", cnonce, "auth", ha2]))
    auth = ('Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
            'algorithm=MD5, qop=auth, nc=00000001, cnonce="%s"' % (login, p["realm"], p["nonce"], uri, response, cnonce))
    return request("REGISTER", call_id, [auth])[0]

if register(password + "-wrong") < 400:
    sys.exit("a wrong password was accepted")
code = register(password)
if code != 200:
    sys.exit("REGISTER answered %d" % code)
code = request("OPTIONS", "%x@check" % random.getrandbits(64))[0]
print("registered %s at %s; OPTIONS answered %d" % (login, me, code), flush=True)
got, end = 0, time.time() + seconds
while time.time() < end:
    sock.settimeout(max(0.1, end - time.time()))
    try:
        data, addr = sock.recvfrom(65535)
    except socket.timeout:
        break
    first, headers = parse(data)
    if first.startswith("SIP/2.0"):
        continue
    to = header(headers, "to", "t")
    if ";tag=" not in to:
        to += ";tag=%x" % random.getrandbits(32)
    out = ["SIP/2.0 200 OK"] + ["Via: " + v for k, v in headers if k.lower() in ("via", "v")]
    out += ["From: " + header(headers, "from", "f"), "To: " + to, "Call-ID: " + header(headers, "call-id", "i"),
            "CSeq: " + header(headers, "cseq"), "Content-Length: 0"]
    sock.sendto(("\r\n".join(out) + "\r\n\r\n").encode(), addr)
    if first.startswith("MESSAGE "):
        got += 1
        print("MESSAGE %d answered" % got, flush=True)
EOF
python3 "$WORK/phone.py" 127.0.0.1 "$SIP_PORT" "$DOMAIN" bob bob-pw 120 >"$WORK/phone.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do
	grep -q '^registered' "$WORK/phone.log" && break
	sleep 0.1
done
grep '^registered' "$WORK/phone.log" || fail "the phone did not register"

log "API traffic"
out=$(api alice alice-pw addGroup '{"gs":"Check","gm":[{"l":"bob","dn":"Bob"}]}')
[[ $out == 200* ]] || fail "addGroup: $out"
gid=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' <<<"$out")
out=$(api bob bob-pw joinGroup "{\"id\":$gid}")
[[ $out == 200* ]] || fail "joinGroup: $out"
out=$(api alice alice-pw sendMessage "{\"id\":$gid,\"mb\":\"hello from the check\"}")
[[ $out == 200* ]] || fail "sendMessage: $out"
out=$(api alice alice-pw getGroup "{\"id\":$gid}")
[[ $out == 200* ]] || fail "getGroup: $out"
for _ in $(seq 100); do
	[[ $(grep -c '^MESSAGE' "$WORK/phone.log") -ge 3 ]] && break
	sleep 0.1
done
[[ $(grep -c '^MESSAGE' "$WORK/phone.log") -ge 3 ]] || fail "bob's phone did not get the notifications and the message"
echo "bob's phone answered $(grep -c '^MESSAGE' "$WORK/phone.log") MESSAGE requests"

log "a database error: another process holds SQLite's write lock past busy_timeout"
python3 - "$WORK/gchd.db" <<'EOF' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
c.execute("BEGIN IMMEDIATE")
time.sleep(12)
c.execute("ROLLBACK")
EOF
LOCKER=$!
PIDS+=("$LOCKER")
sleep 0.5
out=$(api alice alice-pw sendMessage "{\"id\":$gid,\"mb\":\"while locked\"}")
[[ $out == 500* ]] || fail "sendMessage while the database was locked answered $out, want 500"
wait "$LOCKER" || fail "the lock holder failed"
out=$(api alice alice-pw sendMessage "{\"id\":$gid,\"mb\":\"after the lock\"}")
[[ $out == 200* ]] || fail "sendMessage after the lock: $out"

log "failed logins until the source is banned"
for i in 1 2 3; do
	out=$(api alice wrong getGroup "{\"id\":$gid}")
	[[ $out == 401* ]] || fail "wrong password $i answered $out, want 401"
done
out=$(api alice alice-pw getGroup "{\"id\":$gid}")
[[ $out == 429* ]] || fail "a banned source answered $out, want 429"

# ------------------------------------------------------------------ prometheus queries
log "Prometheus sees the traffic"
for _ in $(seq 150); do
	[[ -n $(prom_value 'gchd_limits_rejections_total{job="gchd",limit="auth_source"}') ]] && break
	sleep 0.2
done
check_query() { # EXPR WHAT
	local v
	v=$(prom_value "$1")
	[[ -n $v ]] || fail "Prometheus: no result for $1 ($2)"
	printf '  %-75s = %s\n' "$1" "$v"
}
check_query 'up{job="gchd"} == 1' "gchd scraped"
check_query 'gchd_build_info{job="gchd",version="deploy-check"}' "the build scraped is the one built"
check_query 'gchd_registrar_users_online{job="gchd"} == 1' "bob online"
check_query 'gchd_registrar_contacts{job="gchd",transport="UDP"} == 1' "bob's contact"
check_query 'gchd_delivery_attempts_total{job="gchd",outcome="delivered"} >= 3' "deliveries to bob"
check_query 'gchd_sip_auth_failures_total{job="gchd",reason="credentials"} >= 1' "the wrong SIP password"
check_query 'gchd_api_requests_total{job="gchd",gm="sendMessage",code="500"} >= 1' "the API error"
check_query 'gchd_db_errors_total{job="gchd"} >= 1' "the database error"
check_query 'gchd_limits_rejections_total{job="gchd",limit="auth_source"} >= 1' "the ban"
check_query 'gchd_delivery_pending{job="gchd"} >= 1' "alice's pending deliveries (she has no phone)"

# ------------------------------------------------------------------ metric names
log "metric names of the dashboard and the alerts exist in /metrics"
curl -fsS "$BASE/metrics" >"$WORK/metrics.txt"
python3 - "$WORK/metrics.txt" "$DEPLOY/grafana/gchd.json" "$DEPLOY/prometheus/alerts.yml" <<'EOF'
import re, sys
samples, families = set(), {}
for line in open(sys.argv[1]):
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split()
        families[name] = kind
    elif line.strip() and not line.startswith("#"):
        samples.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
name_re = re.compile(r"(?<![A-Za-z0-9_])(?:gchd|go|process)_[A-Za-z0-9_]*[A-Za-z0-9]")
missing = []
for path in sys.argv[2:]:
    used = sorted(set(name_re.findall(open(path).read())))
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        ok = name in samples or (name in families and families[name] in ("histogram", "summary")) \
            or (base != name and families.get(base) in ("histogram", "summary"))
        if not ok:
            missing.append("%s: %s" % (path, name))
    print("%s: %d metric names, all in /metrics" % (path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1], len(used))
          if not any(m.startswith(path) for m in missing) else "%s: missing names" % path)
if missing:
    print("\n".join("  not in /metrics: " + m for m in missing))
    sys.exit(1)
EOF

# ------------------------------------------------------------------ every dashboard query
log "every dashboard query evaluates in Prometheus"
python3 - "$DEPLOY/grafana/gchd.json" "$PROM" <<'EOF'
import json, sys, urllib.parse, urllib.request
d = json.load(open(sys.argv[1]))
exprs = [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
exprs += [(a["name"], a["expr"]) for a in d["annotations"]["list"] if "expr" in a]
bad, empty = [], []
for title, expr in exprs:
    q = expr.replace("$__rate_interval", "1m").replace('"$job"', '".+"').replace('"$instance"', '".+"')
    url = sys.argv[2] + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        r = json.load(urllib.request.urlopen(url, timeout=10))
    except Exception as e:  # HTTP 400 on a bad query
        bad.append("%s: %s: %s" % (title, expr, e))
        continue
    if r["status"] != "success":
        bad.append("%s: %s: %s" % (title, expr, r))
    elif not r["data"]["result"]:
        empty.append(title + ": " + q)
print("%d queries evaluated, %d with data now" % (len(exprs), len(exprs) - len(empty)))
for e in empty:
    print("  no data (yet): " + e)
if bad:
    print("\n".join("  FAILED: " + b for b in bad))
    sys.exit(1)
EOF

log "every alert rule evaluates"
curl -fsS "$PROM/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r["name"] + ": " + r.get("lastError", "") for r in rules if r.get("health") != "ok"]
active = sorted(set(r["name"] + " (" + r["state"] + ")" for r in rules if r.get("state") not in (None, "inactive")))
print("%d rules in %d groups, all healthy%s" % (len(rules), len(groups), "" if not active else "; active: " + ", ".join(active)))
if not rules or bad:
    print("\n".join("  unhealthy: " + b for b in bad) or "  no rules loaded")
    sys.exit(1)'

# ------------------------------------------------------------------ signals
log "SIGHUP reloads, SIGTERM stops within shutdown.grace"
kill -HUP "$GCHD_PID"
for _ in $(seq 50); do
	grep -q '"configuration reloaded"' "$WORK/gchd.log" && break
	sleep 0.1
done
grep -q '"configuration reloaded"' "$WORK/gchd.log" || fail "no reload logged after SIGHUP"
curl -fsS -o /dev/null "$BASE/healthz" || fail "gchd stopped answering after SIGHUP"
start=$(date +%s%N)
kill -TERM "$GCHD_PID"
rc=0
wait "$GCHD_PID" || rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
[[ $rc == 0 ]] || fail "gchd exited with $rc after SIGTERM"
grep -q '"gchd stopped"' "$WORK/gchd.log" || fail "no \"gchd stopped\" in the log"
echo "stopped with exit code 0 in ${ms} ms"
[[ $ms -lt 6000 ]] || fail "stopping took ${ms} ms, more than shutdown.grace (5s)"

FAILED=0
log "all checks passed"
