-- Shared by the wrk scripts of bench/api.
--
-- Script arguments (after "--" on the wrk command line):
--   GROUP_IDS TOKEN [TOKEN ...]
-- where GROUP_IDS is a group id or a comma-separated list of them and each
-- TOKEN is base64("login:password"). Requests rotate over the tokens (and
-- the groups), so that the load is spread over several accounts.
--
-- done() prints one machine-readable line that run.sh picks up:
--   RESULT requests=N duration_s=S rps=R p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..
--          errors_connect=.. errors_read=.. errors_write=.. errors_timeout=.. non2xx=..

local M = {}

-- urlencode percent-encodes everything but unreserved characters.
function M.urlencode(s)
   return (s:gsub("[^%w%-%._~]", function(c)
      return string.format("%%%02X", string.byte(c))
   end))
end

-- parse_args returns the list of group ids and the list of Authorization
-- values.
function M.parse_args(args)
   if args == nil or #args < 2 then
      error("usage: wrk ... -s SCRIPT URL -- GROUP_IDS TOKEN [TOKEN ...]")
   end
   local groups = {}
   for id in string.gmatch(args[1], "[^,]+") do
      local n = tonumber(id)
      if n == nil then
         error("GROUP_IDS must be numbers separated by commas, got " .. args[1])
      end
      groups[#groups + 1] = n
   end
   if #groups == 0 then
      error("GROUP_IDS is empty")
   end
   local auths = {}
   for i = 2, #args do
      auths[#auths + 1] = "Basic " .. args[i]
   end
   return groups, auths
end

-- done prints the RESULT line.
function M.done(summary, latency, requests)
   local dur = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_s=%.2f rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f " ..
      "errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d non2xx=%d\n",
      summary.requests, dur, summary.requests / dur,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000,
      e.connect, e.read, e.write, e.timeout, e.status))
end

return M
