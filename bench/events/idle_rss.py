#!/usr/bin/env python3
"""Resident memory of idle live event streams, measured from outside gchd.

Opens N streams (GET /gch/events) to a running gchd, in two rounds, and
prints how much the server's VmRSS grew per stream. The client is another
process: nothing of it is counted.

    python3 bench/events/idle_rss.py PID http://127.0.0.1:8080 LOGIN PASSWORD [N]

The server needs http.events_per_account and http.events_per_source at 0
(or above N) and limits.http_connections_per_source at 0, and an open-file
limit above N.
"""
import base64
import socket
import sys
import time
from urllib.parse import urlsplit


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS for pid %d" % pid)


def open_stream(host, port, auth):
    s = socket.create_connection((host, port))
    s.sendall(f"GET /gch/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("connection closed before the answer's header")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise SystemExit("stream refused: %r" % status)
    return s


def main():
    pid, base, login, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    u = urlsplit(base)
    auth = base64.b64encode(f"{login}:{password}".encode()).decode()
    # Warm up what all streams share (the account cache, pools).
    for s in [open_stream(u.hostname, u.port, auth) for _ in range(50)]:
        s.close()
    time.sleep(1)
    held = []
    for round_ in (1, 2):
        before = rss_kib(pid)
        held += [open_stream(u.hostname, u.port, auth) for _ in range(n)]
        time.sleep(2)
        after = rss_kib(pid)
        print(f"round {round_}: {n} more idle streams, VmRSS {before} -> {after} KiB, {(after - before) / n:.1f} KiB per stream")


if __name__ == "__main__":
    main()
