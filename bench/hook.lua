-- wrk script for bench/hooks.sh: POST one JSON body with a distinct bearer token per request.
--
-- Configured through the environment (wrk passes script arguments only to the worker threads,
-- but done() runs in the main Lua state, so the environment is the one place all states see):
--   BENCH_LABEL    label printed in the RESULT line
--   BENCH_BODY     file with the JSON request body
--   BENCH_TOKENS   file with one JWT per line; each thread takes every Nth line, none is reused
--   BENCH_THREADS  wrk's -t (to split the token list between threads)
--   BENCH_RATE     total requests/s to pace at; 0 or unset = as fast as the connections allow
--   BENCH_REUSE    1 = cycle through the tokens when they run out (only for the echo, which
--                  checks nothing: same request bytes and Lua work, no need to mint more)
--
-- Pacing: wrk is closed-loop, so each thread keeps a schedule of send slots 1/(rate/threads)
-- apart and delay() tells a connection to wait for the next free slot (monotonic clock via
-- LuaJIT's FFI). With enough connections this is an open-loop arrival rate; if the server falls
-- behind, connections send as soon as they are free and the achieved rate drops below the target.
--
-- done() prints one line:
--   RESULT label=.. requests=.. duration_s=.. rps=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..
--          mean_ms=.. non2xx=.. connect_err=.. read_err=.. write_err=.. timeouts=.. exhausted=..

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local function slurp(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local s = f:read("*a")
  f:close()
  return s
end

-- ---- main state: setup() and done() ----
local threads = {}

function setup(thread)
  thread:set("tid", #threads) -- 0-based
  table.insert(threads, thread)
end

-- ---- worker threads ----
local tokens, ntokens, next_token = {}, 0, 1
local prefix, suffix
local interval_ms, next_slot = nil, nil
exhausted = 0

function init(args)
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  local body = slurp(os.getenv("BENCH_BODY"))
  local i = 0
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if line ~= "" then
      if i % nthreads == tid then
        ntokens = ntokens + 1
        tokens[ntokens] = line
      end
      i = i + 1
    end
  end
  local marker = "@@TOKEN@@"
  local raw = wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json",
    ["Authorization"] = "Bearer " .. marker,
  }, body)
  local at = assert(raw:find(marker, 1, true), "marker not found in formatted request")
  prefix = raw:sub(1, at - 1)
  suffix = raw:sub(at + #marker)
  local rate = tonumber(os.getenv("BENCH_RATE") or "0")
  if rate > 0 then
    interval_ms = 1000.0 / (rate / nthreads)
  end
end

if (tonumber(os.getenv("BENCH_RATE") or "0")) > 0 then
  function delay()
    local now = now_ms()
    if next_slot == nil then next_slot = now end
    local wait = next_slot - now
    next_slot = next_slot + interval_ms
    if wait <= 0 then return 0 end
    return math.floor(wait)
  end
end

local reuse = os.getenv("BENCH_REUSE") == "1"

function request()
  if next_token > ntokens and reuse then
    next_token = 1
  end
  if next_token > ntokens then
    -- Out of fresh tokens: stop rather than replay. This request will be refused (401), so the
    -- run shows non2xx > 0 and bench/hooks.sh rejects it; raise the token count.
    exhausted = exhausted + 1
    wrk.thread:stop()
    return prefix .. "exhausted" .. suffix
  end
  local t = tokens[next_token]
  next_token = next_token + 1
  return prefix .. t .. suffix
end

function done(summary, latency, requests)
  local ex = 0
  for _, t in ipairs(threads) do ex = ex + (t:get("exhausted") or 0) end
  local e = summary.errors
  local secs = summary.duration / 1e6
  local function ms(v) return string.format("%.3f", v / 1000.0) end
  io.write(string.format(
    "RESULT label=%s requests=%d duration_s=%.2f rps=%.1f p50_ms=%s p90_ms=%s p99_ms=%s max_ms=%s mean_ms=%s non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d exhausted=%d\n",
    os.getenv("BENCH_LABEL") or "run", summary.requests, secs, summary.requests / secs,
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency.max), ms(latency.mean), e.status, e.connect, e.read, e.write, e.timeout, ex))
end
