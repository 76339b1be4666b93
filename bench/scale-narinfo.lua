-- wrk script for bench/scale: GETs /<hash>.narinfo for a hash drawn at random from the file
-- given after `--` (one a line) on every request, each thread with its own seed, and prints
-- one machine-readable RESULT line at the end (latencies in microseconds). bench/narinfo.lua
-- rotates instead, and LuaJIT's unseeded math.random starts every thread at the same line.

local hashes = {}
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  for line in io.lines(args[1]) do
    hashes[#hashes + 1] = line
  end
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  return wrk.format("GET", "/" .. hashes[math.random(#hashes)] .. ".narinfo")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.1f p50=%d p99=%d status_errors=%d other_errors=%d\n",
    summary.requests, summary.requests / summary.duration * 1e6,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
