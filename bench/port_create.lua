-- wrk script for bench/ha.sh: POST /v2.0/ports to the network named by $NET, as fast as the
-- connections allow; each create allocates a MAC and an address (IPAM) and is stored durably.
wrk.method = "POST"
wrk.path = "/v2.0/ports"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"port": {"network_id": "' .. os.getenv("NET") .. '"}}'

done = function(summary, latency, requests)
  -- the totals as one JSON line, for the script to read
  io.write(string.format('{"requests": %d, "seconds": %.2f, "non_2xx": %d, "p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
