#!/usr/bin/env python3
"""Writes a SIPp injection file of gchd accounts: login;password;[authentication ...].
usage: users.py PREFIX COUNT [PASSWORD_PREFIX] > users.csv
Accounts user00001.. with passwords pass00001.. match `gchd accounts import`
files made by the same script with --accounts."""
import sys
args = [a for a in sys.argv[1:] if not a.startswith("--")]
prefix, count = args[0], int(args[1])
pw = args[2] if len(args) > 2 else "pass"
if "--accounts" in sys.argv:
    for i in range(1, count + 1):
        print("%s%05d,%s%05d" % (prefix, i, pw, i))
else:
    print("SEQUENTIAL")
    for i in range(1, count + 1):
        u, p = "%s%05d" % (prefix, i), "%s%05d" % (pw, i)
        print("%s;%s;[authentication username=%s password=%s]" % (u, p, u, p))
