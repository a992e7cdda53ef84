-- wrk script: gm=getGroup as a GET with the query string.
--
--   wrk -t2 -c32 -d10s --latency -s getgroup.lua http://127.0.0.1:18080 -- GROUP_ID TOKEN [TOKEN ...]
--
-- The requests (one per account) are formatted once in init(); request()
-- only rotates over them, so wrk spends little CPU per request.

-- Find common.lua next to this script, wherever wrk is started from.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local common = require("common")

local reqs = {}
local n = 0

function init(args)
   local group, auths = common.parse_args(args)
   local pm = common.urlencode(string.format('{"id":%d}', group))
   local path = "/gch.ashx?gm=getGroup&pm=" .. pm
   for i, auth in ipairs(auths) do
      reqs[i] = wrk.format("GET", path, { ["Authorization"] = auth })
   end
end

function request()
   n = n + 1
   return reqs[(n % #reqs) + 1]
end

done = common.done
