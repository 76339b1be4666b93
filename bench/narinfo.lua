-- wrk script for bench/run: GETs /<hash>.narinfo, rotating over the hashes in the file
-- given after `--` (one a line; each thread starts at a random one), and prints one
-- machine-readable RESULT line at the end (latencies in microseconds).

local hashes = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    hashes[#hashes + 1] = line
  end
  i = math.random(#hashes)
end

function request()
  i = i % #hashes + 1
  return wrk.format("GET", "/" .. hashes[i] .. ".narinfo")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.1f p50=%d p99=%d status_errors=%d other_errors=%d\n",
    summary.requests, summary.requests / summary.duration * 1e6,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
