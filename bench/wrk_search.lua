-- wrk script for bench/load.py: POST /search with the bodies of a file, one per line,
-- cycling through them; stops after a given number of responses.
--
--   wrk -t1 -c16 -d60s --timeout 120s -s bench/wrk_search.lua URL -- BODIES LIMIT HITS
--
-- A response counts as good when it is a 200 holding HITS hits. At the end it
-- prints one line, "WRK {json}": good and bad responses, wrk's socket errors, the
-- seconds from the first request to the last response (wrk's own duration is the -d
-- time even when the run stopped early) and the latency at every 0.1 percentile.
local ffi = require("ffi")
ffi.cdef [[
  struct timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clk_id, struct timespec *tp);
  int getpid(void);
  long syscall(long number, ...);
]]
local CLOCK_MONOTONIC, SIGINT = 1, 2
local SYS_TGKILL = ({ x64 = 234, arm64 = 131 })[ffi.arch] -- Linux; nil: wait out -d

local function now()
  local ts = ffi.new("struct timespec")
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Globals, so that done() can read them from each thread with thread:get().
bodies, count, at, good, bad, limit, want, first, last = {}, 0, 0, 0, 0, 0, 0, 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  limit, want = tonumber(args[2]), tonumber(args[3])
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(args[1]) do
    count = count + 1
    bodies[count] = wrk.format("POST", "/search", headers, line)
  end
end

function request()
  if first == 0 then first = now() end
  at = at % count + 1
  return bodies[at]
end

function response(status, headers, body)
  local _, hits = body:gsub('"id":', "")
  if status == 200 and hits == want then good = good + 1 else bad = bad + 1 end
  last = now()
  if good + bad >= limit then
    wrk.thread:stop()
    -- wake wrk's main thread, which otherwise sleeps out the whole -d duration
    if SYS_TGKILL then
      local pid = ffi.C.getpid()
      local long = ffi.typeof("long") -- varargs: Lua numbers would pass as doubles
      ffi.C.syscall(long(SYS_TGKILL), long(pid), long(pid), long(SIGINT))
    end
  end
end

function done(summary, latency, requests)
  local g, b, first_s, last_s = 0, 0, math.huge, 0
  for _, t in ipairs(threads) do
    g, b = g + t:get("good"), b + t:get("bad")
    if t:get("first") > 0 then first_s = math.min(first_s, t:get("first")) end
    last_s = math.max(last_s, t:get("last"))
  end
  local q = {}
  for p = 1, 1000 do q[p] = string.format("%d", latency:percentile(p / 10)) end
  local e = summary.errors
  io.write(string.format(
    'WRK {"good": %d, "bad": %d, "socket_errors": %d, "seconds": %.6f, "quantiles_us": [%s]}\n',
    g, b, e.connect + e.read + e.write + e.timeout, math.max(last_s - first_s, 0),
    table.concat(q, ",")))
end
