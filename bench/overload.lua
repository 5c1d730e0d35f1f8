-- wrk script for bench/overload.py: POST /v1/infer (features off, 20 floats) and count the
-- answers by class; in `honour` mode a client that got a 429 or 503 waits what `Retry-After`
-- asks (plus up to 50 % jitter) before its next request, through wrk's delay() hook.
--
--   wrk -t1 -c1024 -d8s --latency -s bench/overload.lua URL -- MODE TAG
--
-- MODE: honour  back off after a 429/503 as Retry-After says (well-behaved callers)
--       storm   resend at once (a retry storm: callers that ignore Retry-After)
-- wrk calls delay() once before each request of a connection, after that connection's
-- response() (its answer handled), but does not say which connection. So in honour mode every
-- response() queues one entry (the back-off for a 429/503, 0 otherwise) and delay() hands them
-- out in order: wrk's event loop makes a connection writable in the order the answers came, so
-- each connection gets its own back-off. (Queuing only the back-offs handed one to whichever
-- connection asked next, often one that just got a 200, while the 429's connection resent at
-- once and was held by the gateway's retry-storm penalty: ~1 % of answers.)
-- done() prints one line "OVERLOAD_JSON {...}" that bench/overload.py parses.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

ok = 0
shed = 0
s5xx = 0
other = 0
backoffs = 0
backoff_ms_total = 0

local honour, tag, counter = true, "o", 0
local queue, head, tail = {}, 1, 0
local body_head = '{"model":"clf","unit_id":"'
local body_tail = '","inputs":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9,2.0]}'
local ctype = { ["Content-Type"] = "application/json" }

function init(args)
  honour = (args[1] or "honour") == "honour"
  tag = (args[2] or "o") .. "-" .. tostring(tid or 0) .. "-"
  math.randomseed(os.time() + (tid or 0))
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/infer", ctype, body_head .. tag .. counter .. body_tail)
end

function response(status, headers, body)
  local ms = 0
  if status == 200 then
    ok = ok + 1
  elseif status == 429 then
    shed = shed + 1
  elseif status >= 500 then
    s5xx = s5xx + 1
  else
    other = other + 1
  end
  if not honour then
    return
  end
  if status == 429 or status == 503 then
    local ra = tonumber(headers["retry-after"] or headers["Retry-After"] or "1") or 1
    ms = math.floor(ra * 1000 * (1 + 0.5 * math.random()))
    backoffs = backoffs + 1
    backoff_ms_total = backoff_ms_total + ms
  end
  tail = tail + 1
  queue[tail] = ms
end

function delay()
  if head <= tail then
    local ms = queue[head]
    queue[head] = nil
    head = head + 1
    return ms
  end
  return 0
end

function done(summary, latency, requests)
  local t = { ok = 0, shed = 0, s5xx = 0, other = 0, backoffs = 0, backoff_ms_total = 0 }
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + th:get(k)
    end
  end
  local e = summary.errors
  local p = function(q) return latency:percentile(q) / 1000.0 end
  io.write(string.format(
    'OVERLOAD_JSON {"duration_s":%.6f,"requests":%d,"ok":%d,"shed":%d,"s5xx":%d,"other":%d,' ..
    '"backoffs":%d,"backoff_ms_total":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_ms":{"mean":%.4f,"max":%.4f,"p50":%.4f,"p90":%.4f,"p99":%.4f,"p999":%.4f}}\n',
    summary.duration / 1e6, summary.requests, t.ok, t.shed, t.s5xx, t.other, t.backoffs,
    t.backoff_ms_total, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean / 1000.0, latency.max / 1000.0, p(50), p(90), p(99), p(99.9)))
end
