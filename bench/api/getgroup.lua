-- wrk script: gm=getGroup as a GET with the query string.
--
--   wrk -t2 -c32 -d10s --latency -s getgroup.lua http://127.0.0.1:18080 -- GROUP_IDS TOKEN [TOKEN ...]
--
-- The requests (one per account and group) are formatted once in init();
-- request() only rotates over them, so wrk spends little CPU per request.
-- Every account must be a member of every group.

-- Find common.lua next to this script, wherever wrk is started from.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local common = require("common")

local reqs = {}
local n = 0

function init(args)
   local groups, auths = common.parse_args(args)
   for _, auth in ipairs(auths) do
      for _, group in ipairs(groups) do
         local pm = common.urlencode(string.format('{"id":%d}', group))
         local path = "/gch.ashx?gm=getGroup&pm=" .. pm
         reqs[#reqs + 1] = wrk.format("GET", path, { ["Authorization"] = auth })
      end
   end
end

function request()
   n = n + 1
   return reqs[(n % #reqs) + 1]
end

done = common.done
