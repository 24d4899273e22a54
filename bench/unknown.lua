-- Conversion postbacks for click IDs that were never issued (a flood of made-up `cid`s), each
-- unique: at least UNKNOWN_COUNT of them across wrk's 2 threads (run it with -t2; one more per
-- thread, as wrk may not send a thread's first request), then only /api/health (bench/live
-- stops wrk once the server has recorded them). Used by bench/live for the memory they cost.
local per_thread = math.ceil(tonumber(os.getenv("UNKNOWN_COUNT") or "100000") / 2) + 1

function setup(thread)
  thread:set("tag", tostring(math.random(1, 1e9)))
end

function init(args)
  sent = 0
end

function request()
  sent = sent + 1
  if sent > per_thread then
    return wrk.format("GET", "/api/health")
  end
  local cid = string.format("made-up-%s-%d", tag, sent)
  return wrk.format("GET", "/api/conversion?cid=" .. cid .. "&amount=49.99&txid=T" .. sent)
end

