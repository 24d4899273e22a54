-- wrk script for bench/live: the mixed postbacks of bench/ingest (clicks, conversions and
-- refunds in equal parts), paced: each connection waits LIVE_DELAY_MS between requests, so
-- the load is connections * 1000 / (LIVE_DELAY_MS + service time) postbacks per second.
local counter = 0
local thread_id = 0
local threads = {}
local pause = tonumber(os.getenv("LIVE_DELAY_MS") or "10")

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function delay()
  return pause
end

function request()
  counter = counter + 1
  local n = counter % 3
  local cid = string.format("load-%d-%d", thread_id, counter)
  if n == 0 then
    return wrk.format("GET", "/api/click?source=load" .. (counter % 7) .. "&campaign=c1&cost=0.0123&country=DE")
  elseif n == 1 then
    return wrk.format("GET", "/api/conversion?cid=" .. cid .. "&amount=49.99&txid=t-" .. cid)
  else
    return wrk.format("POST", "/api/conversion/refund",
      {["Content-Type"] = "application/x-www-form-urlencoded"},
      "cid=" .. cid .. "&amount=-12.50&type=cb&txid=r-" .. cid)
  end
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
