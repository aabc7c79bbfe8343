-- wrk script for bench/load.sh: the mix of a companion product's traffic, spread over many
-- signed-in demo users (browse characters 40%, read history 30%, send a message 15%,
-- profile 10%, log in 5%).
--
-- Arguments after `--`: the users file (lines "token email conversation conversation…",
-- written by bench/load.sh) and, optionally, a target rate in requests per second for the
-- whole run (each connection then pauses between its requests; 0 or nothing: as fast as
-- the server answers), the connections per thread and the threads (for that pause), and
-- one kind of request to send alone (browse, history, send, profile, login) or "nologin".
-- At the end it prints the latency percentiles, the rate, and the answers by status.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

local users = {}
local pause_ms = 0
-- With a fifth argument (browse, history, send, profile or login), only that kind of request;
-- with "nologin", the mix without its logins.
local only = nil
local draws = 100
local kinds = { browse = 40, history = 70, send = 85, profile = 95, login = 100 }
-- A global: done() reads each thread's through thread:get.
statuses = {}

function init(args)
  local file = assert(io.open(args[1], "r"), "users file")
  for line in file:lines() do
    local words = {}
    for word in line:gmatch("%S+") do table.insert(words, word) end
    if #words >= 3 then
      table.insert(users, { token = words[1], email = words[2], conversations = { select(3, unpack(words)) } })
    end
  end
  file:close()
  assert(#users > 0, "no users in " .. args[1])
  math.randomseed(os.time() * 1000 + id)
  local rate = tonumber(args[2])
  if rate and rate > 0 then
    -- wrk.connections is not visible here; bench/load.sh passes connections per thread.
    local per_thread = tonumber(args[3]) or 1
    local threads_n = tonumber(args[4]) or 1
    pause_ms = 1000 * per_thread * threads_n / rate
  end
  if args[5] == "nologin" then
    -- The mix without its logins: browse, history, send and profile in the same proportions.
    draws = 95
  elseif args[5] and args[5] ~= "" then
    only = assert(kinds[args[5]], "unknown kind " .. args[5])
  end
  statuses = {}
end

function delay()
  return pause_ms
end

local function authorized(user, method, path, body)
  local headers = { ["Authorization"] = "Bearer " .. user.token }
  if body then headers["Content-Type"] = "application/json" end
  return wrk.format(method, path, headers, body)
end

function request()
  local user = users[math.random(#users)]
  local draw = only or math.random(draws)
  if draw <= 40 then
    return authorized(user, "GET", "/api/v1/characters?page=" .. math.random(0, 49) .. "&size=20")
  elseif draw <= 70 then
    local conversation = user.conversations[math.random(#user.conversations)]
    return authorized(user, "GET", "/api/v1/conversations/" .. conversation .. "/messages?limit=50")
  elseif draw <= 85 then
    local conversation = user.conversations[math.random(#user.conversations)]
    return authorized(user, "POST", "/api/v1/conversations/" .. conversation .. "/messages",
      '{"content":"I went for a walk today and thought about the stars.","type":"text"}')
  elseif draw <= 95 then
    return authorized(user, "GET", "/api/v1/users/profile")
  else
    return wrk.format("POST", "/api/v1/auth/login", { ["Content-Type"] = "application/json" },
      '{"email":"' .. user.email .. '","password":"demo-password-2026"}')
  end
end

function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by_status = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, n in pairs(counts) do
      by_status[status] = (by_status[status] or 0) + n
    end
  end
  local seconds = summary.duration / 1e6
  local failed, refused = 0, 0
  local parts = {}
  for status, n in pairs(by_status) do
    -- 409: the conversation is busy with a reply (two sends drawn for it at once); 429: a
    -- budget is spent. Refusals by design, counted apart from failures.
    if status == 409 or status == 429 then
      refused = refused + n
    elseif status >= 400 then
      failed = failed + n
    end
    table.insert(parts, status .. "=" .. n)
  end
  table.sort(parts)
  local socket = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("requests %d in %.1f s: %.0f req/s\n", summary.requests, seconds, summary.requests / seconds))
  io.write(string.format("latency ms: p50 %.2f  p95 %.2f  p99 %.2f  max %.2f\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("answers: %s\n", table.concat(parts, " ")))
  io.write(string.format("errors: %d other 4xx/5xx and %d socket errors (%.3f%%); refused (409, 429): %d (%.2f%%)\n",
    failed, socket, 100 * (failed + socket) / math.max(summary.requests, 1),
    refused, 100 * refused / math.max(summary.requests, 1)))
end
