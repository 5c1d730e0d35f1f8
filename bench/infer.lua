-- wrk script for bench.harness: POST inference bodies with a fresh unit id per request and
-- count the answers per variant by reading the body.
--
--   wrk -t1 -c64 -d10s --latency -s bench/infer.lua URL -- MODE TAG [ENTITIES]
--
-- MODE: triton  KServe v2 body to Triton itself (URL path /v2/models/clf/versions/1/infer)
--       triton_ab  the same, every other request to version 2: the experiment's 50/50 split
--               made by the client itself, without a gateway (counted by the answer's version)
--       v1      gateway /v1/infer, full 20-float input (features off)
--       entity  gateway /v1/infer with {"entity":{"user_id":N}} and 4 floats (features on)
--       v2      gateway KServe v2 /v2/models/clf/infer, unit id in the x-unit-id header
-- TAG makes unit ids unique per run (so runs are independent draws of the split).
-- wrk runs one Lua state per thread: each thread counts into its own globals and done()
-- (in the main state) sums them through the thread objects kept by setup().
-- done() prints one line "BENCH_JSON {...}" that bench/wrk.py parses.

local threads = {}
local n_threads = 0

function setup(thread)
  n_threads = n_threads + 1
  thread:set("tid", n_threads)
  table.insert(threads, thread)
end

sent = 0
responses = 0
non2xx = 0
variants = {}

local mode, tag, entities, counter = "v1", "r", 10000, 0
local fixed, head_v1, tail_v1, path, ctype, ab
local inputs20 = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9,2.0]"
local inputs4 = "[0.5,1.0,1.5,2.0]"
local v2_body = '{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[1,20],"data":' .. inputs20 .. '}]}'

function init(args)
  mode = args[1] or "v1"
  tag = (args[2] or "r") .. "-" .. tostring(tid or 0) .. "-"
  entities = tonumber(args[3] or "10000")
  ctype = { ["Content-Type"] = "application/json" }
  if mode == "triton" then
    fixed = wrk.format("POST", nil, ctype, v2_body)
  elseif mode == "triton_ab" then
    ab = { wrk.format("POST", "/v2/models/clf/versions/1/infer", ctype, v2_body),
           wrk.format("POST", "/v2/models/clf/versions/2/infer", ctype, v2_body) }
  elseif mode == "v2" then
    path = "/v2/models/clf/infer"
  elseif mode == "v1" or mode == "entity" then
    head_v1 = '{"model":"clf","unit_id":"'
    if mode == "v1" then
      tail_v1 = '","inputs":' .. inputs20 .. '}'
    end
  else
    error("unknown mode " .. mode)
  end
end

function request()
  sent = sent + 1
  if fixed then
    return fixed
  end
  counter = counter + 1
  if ab then
    return ab[counter % 2 + 1]
  end
  local uid = tag .. counter
  if mode == "v1" then
    return wrk.format("POST", nil, ctype, head_v1 .. uid .. tail_v1)
  elseif mode == "entity" then
    -- a multiplicative hash spreads consecutive counters over the entity ids 1..N
    local eid = (counter * 2654435761) % entities + 1
    return wrk.format("POST", nil, ctype, head_v1 .. uid .. '","entity":{"user_id":' .. eid
                      .. '},"inputs":' .. inputs4 .. '}')
  end
  return wrk.format("POST", path, { ["Content-Type"] = "application/json", ["x-unit-id"] = uid }, v2_body)
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    return
  end
  local v
  if ab then
    v = string.match(body, '"model_version"%s*:%s*"([^"]*)"')
  else
    v = string.match(body, '"variant"%s*:%s*"([^"]*)"')
  end
  if v == nil then v = "_none" end
  variants[v] = (variants[v] or 0) + 1
end

local function json_counts(t)
  local parts = {}
  for k, v in pairs(t) do
    table.insert(parts, string.format("%q:%d", k, v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local total = { sent = 0, responses = 0, non2xx = 0 }
  local vs = {}
  for _, t in ipairs(threads) do
    total.sent = total.sent + t:get("sent")
    total.responses = total.responses + t:get("responses")
    total.non2xx = total.non2xx + t:get("non2xx")
    for k, v in pairs(t:get("variants")) do
      vs[k] = (vs[k] or 0) + v
    end
  end
  local e = summary.errors
  local p = function(q) return latency:percentile(q) / 1000.0 end
  io.write(string.format(
    'BENCH_JSON {"duration_s":%.6f,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"sent":%d,"responses":%d,"non2xx":%d,"variants":%s,' ..
    '"latency_ms":{"mean":%.4f,"stdev":%.4f,"max":%.4f,"p50":%.4f,"p90":%.4f,"p99":%.4f,"p999":%.4f}}\n',
    summary.duration / 1e6, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    total.sent, total.responses, total.non2xx, json_counts(vs),
    latency.mean / 1000.0, latency.stdev / 1000.0, latency.max / 1000.0,
    p(50), p(90), p(99), p(99.9)))
end
