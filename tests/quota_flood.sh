#!/bin/bash
# Floods a fresh gchd (SQLite, ports 18481/15481) as one account, with
# invitations of an offline user, and deletes a group of 1,000 messages;
# prints the answers and what the database kept (docs/operations.md,
# Security: quotas, deleted groups).
# usage: tests/quota_flood.sh [BINARY]   (default: gchd in PATH); settings
# such as GCHD_CHAT_MAX_GROUPS_PER_HOUR=0 pass through the environment.
set -u
BIN=${1:-gchd}; D=$(mktemp -d); DB=$D/gchd.db
export GCHD_DATABASE=sqlite:$DB GCHD_DOMAIN=m.local GCHD_HTTP_ADDR=127.0.0.1:18481 GCHD_SIP_ADDR=127.0.0.1:15481 GCHD_LIMITS_HTTP_RATE=0
for l in att vic mem; do echo "pw-$l" | $BIN accounts add $l >/dev/null; done
$BIN serve >$D/log 2>&1 & PID=$!
for i in $(seq 50); do curl -s -o /dev/null 127.0.0.1:18481/healthz && break; sleep 0.1; done
API=http://127.0.0.1:18481/gch.ashx
call() { curl -s -u $1:pw-$1 $API --data-urlencode gm=$2 --data-urlencode "pm=$3"; echo; }
echo "== 1000 addGroup by att, each inviting vic (offline)"
for i in $(seq 1000); do call att addGroup '{"gs":"spam","gm":[{"l":"vic"}]}'; done | sed 's/{"id":[0-9]*}/200/' | sort | uniq -c
echo "pending deliveries att->vic: $(sqlite3 $DB "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.mid=d.mid WHERE d.login='vic' AND d.state='p' AND e.sender='att'")"
echo "groups owned by att: $(sqlite3 $DB "SELECT COUNT(*) FROM chat_groups WHERE owner='att'")"
echo "== delGroup of a group with 3 members, 1000 messages, 1 read receipt"
G=$(call mem addGroup '{"gs":"big","gm":[{"l":"att"},{"l":"vic"}]}' | tr -dc 0-9)
call att joinGroup "{\"id\":$G}" >/dev/null
for i in $(seq 1000); do call mem sendMessage "{\"id\":$G,\"mb\":\"secret $i\"}"; done | sort | uniq -c
M=$(sqlite3 $DB "SELECT MAX(mid) FROM events WHERE group_id=$G AND kind='MSG'")
call att readMessage "{\"id\":$G,\"mid\":$M}" >/dev/null
q() { sqlite3 $DB "SELECT (SELECT COUNT(*) FROM events WHERE group_id=$G), (SELECT COUNT(*) FROM deliveries d JOIN events e ON e.mid=d.mid WHERE e.group_id=$G), (SELECT COUNT(*) FROM deliveries d JOIN events e ON e.mid=d.mid WHERE e.group_id=$G AND d.rd_at>0), (SELECT COUNT(*) FROM events WHERE group_id=$G AND body LIKE 'secret%')"; }
echo "before delGroup: events|deliveries|receipts|message texts = $(q)"
call mem delGroup "{\"id\":$G}"
echo "after delGroup:  events|deliveries|receipts|message texts = $(q)"
kill $PID; wait $PID 2>/dev/null; rm -rf $D
