-- wrk script: gm=sendMessage as a POST url-encoded form, every request with
-- a different message text.
--
--   wrk -t2 -c32 -d10s --latency -s sendmessage.lua http://127.0.0.1:18080 -- GROUP_IDS TOKEN [TOKEN ...]
--
-- Requests rotate over the accounts and, every full round of accounts, to
-- the next group; every account must be a joined member of every group.

-- Find common.lua next to this script, wherever wrk is started from.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local common = require("common")

local counter = 1

-- setup runs in the main interpreter once per thread: number the threads so
-- that message texts are unique across them.
function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
end

local groups, auths
local n = 0
local headers = {}
local prefix
local run

function init(args)
   groups, auths = common.parse_args(args)
   prefix = "gm=sendMessage&pm="
   -- Texts stay unique across wrk runs against the same database too.
   run = os.time()
   headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
   n = n + 1
   headers["Authorization"] = auths[(n % #auths) + 1]
   local group = groups[(math.floor(n / #auths) % #groups) + 1]
   local pm = string.format('{"id":%d,"mb":"bench message %d-%d-%d"}', group, run, tid or 0, n)
   return wrk.format("POST", "/gch.ashx", headers, prefix .. common.urlencode(pm))
end

done = common.done
