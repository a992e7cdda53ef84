-- wrk script: gm=sendMessage as a POST url-encoded form, every request with
-- a different message text.
--
--   wrk -t2 -c32 -d10s --latency -s sendmessage.lua http://127.0.0.1:18080 -- GROUP_ID TOKEN [TOKEN ...]

-- Find common.lua next to this script, wherever wrk is started from.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local common = require("common")

local threads = {}
local counter = 1

-- setup runs in the main interpreter once per thread: number the threads so
-- that message texts are unique across them.
function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local group, auths
local n = 0
local headers = {}
local prefix

function init(args)
   group, auths = common.parse_args(args)
   prefix = "gm=sendMessage&pm="
   headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
   n = n + 1
   headers["Authorization"] = auths[(n % #auths) + 1]
   local pm = string.format('{"id":%d,"mb":"bench message %d-%d"}', group, tid or 0, n)
   return wrk.format("POST", "/gch.ashx", headers, prefix .. common.urlencode(pm))
end

done = common.done
