-- wrk script for bench/ingest and bench/live: a mix of clicks, conversions and refunds in equal
-- parts, every conversion and refund with its own cid/txid so none is a duplicate. Foreign-style
-- click IDs (allowed by the contract) keep the generator independent of the server's MAC key.
-- With WRK_DELAY_MS set, each connection waits that long between requests (a paced load of
-- about connections * 1000 / WRK_DELAY_MS postbacks per second); without it, full speed.
local counter = 0
local threads = {}
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "")
if pause then
  function delay()
    return pause
  end
end

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local n = counter % 3
  -- thread_id is the global that setup() gives each thread's own Lua state.
  local cid = string.format("bench-%d-%d", thread_id or 0, counter)
  if n == 0 then
    return wrk.format("GET", "/api/click?source=src" .. (counter % 7) .. "&campaign=c1&cost=0.0123&country=DE")
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
