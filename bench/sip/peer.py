#!/usr/bin/env python3
"""Runs the peer bench's runner (sipp/bench.py of the Kamailio baseline) with
a few additions, without changing it: it imports bench.py and replaces some
of its functions.

usage: peer.py [--peer DIR] [--uac-sf FILE] [--rooms-csv FILE]
               [--external-uas URL] [--fresh-users POOL.csv] [--skip N]
               step|max TEST [bench.py options...]

  --peer DIR           the copy of the peer bench (default /tmp/sipbench/peer)
  --uac-sf FILE        scenario instead of sipp/message_uac.xml (msg, room)
  --rooms-csv FILE     injection file instead of sipp/rooms.csv (room)
  --external-uas URL   msg/room: do not start a SIPp UAS nor register the
                       targets; count deliveries by GETting URL (a running
                       `sipload uas`, which registered them itself)
  --fresh-users POOL   reg/reg_auth: every step, warm-up included, registers
                       users that were never registered: step k takes the
                       next rate*dur lines of POOL (a users_auth.csv-style
                       file with a SEQUENTIAL header)
  --skip N             with --fresh-users: start after the first N users

Everything else goes to bench.py unchanged (results in DIR/results/LABEL.tsv).
"""
import argparse
import os
import sys
import urllib.request

ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
ap.add_argument("--peer", default=os.environ.get("PEER", "/tmp/sipbench/peer"))
ap.add_argument("--uac-sf")
ap.add_argument("--rooms-csv")
ap.add_argument("--external-uas")
ap.add_argument("--fresh-users")
ap.add_argument("--skip", type=int, default=0)
ours, rest = ap.parse_known_args()
if not rest or rest[0] in ("-h", "--help"):
    print(__doc__)
    sys.exit(2)

sys.path.insert(0, os.path.join(ours.peer, "sipp"))
import bench  # noqa: E402  (the peer bench's runner)

orig_scenario_args = bench.scenario_args


def scenario_args(a):
    sargs, dest = orig_scenario_args(a)
    out = []
    for x in sargs:
        if ours.uac_sf and os.path.basename(x) == "message_uac.xml":
            x = os.path.abspath(ours.uac_sf)
        if ours.rooms_csv and os.path.basename(x) == "rooms.csv":
            x = os.path.abspath(ours.rooms_csv)
        out.append(x)
    return out, dest


bench.scenario_args = scenario_args

if ours.external_uas:
    class _Proc:
        pid = 0

    class ExternalUAS:
        def __init__(self, a, workdir):
            self.p = _Proc()
            self.count()  # fails now if it does not answer

        def count(self):
            with urllib.request.urlopen(ours.external_uas, timeout=5) as r:
                return int(r.read().decode().strip())

        def stop(self):
            pass

    bench.UAS = ExternalUAS
    bench.register_contacts = lambda *args, **kw: print("# targets registered by the external UAS", flush=True)

if ours.fresh_users:
    with open(ours.fresh_users) as f:
        pool = [l for l in f.read().splitlines()[1:] if l]
    state = {"next": ours.skip}
    orig_run_step = bench.run_step

    def run_step(a, rate, workdir, uas=None):
        n = int(rate * a.dur)
        lo = state["next"]
        if lo + n > len(pool):
            # Not a failure of the server: say so, and let the search end
            # with the best rate so far. (Exiting here lost that rate, and
            # a search that ended on the pool read like one that ended on
            # the server: two servers "both passed" the last step run.)
            print(f"# POOL ENDED: {os.path.basename(ours.fresh_users)} has {len(pool)} users, a step at "
                  f"{rate}/s needs {lo + n}; that step is not run and is no failure: the maximum may be "
                  f"higher (START/FACTOR to reach it in fewer steps, or POOL_USERS)", flush=True)
            return None
        path = os.path.join(workdir, f"fresh_{lo}_{n}.csv")
        with open(path, "w") as f:
            f.write("SEQUENTIAL\n" + "\n".join(pool[lo:lo + n]) + "\n")
        state["next"] = lo + n
        a.users_csv = a.users_auth_csv = path
        print(f"# users {lo + 1}..{lo + n} of the pool", flush=True)
        try:
            return orig_run_step(a, rate, workdir, uas)
        finally:
            os.remove(path)

    bench.run_step = run_step

sys.argv = [os.path.join(ours.peer, "sipp", "bench.py")] + rest
bench.main()
