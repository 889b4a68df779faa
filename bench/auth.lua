-- SPDX-License-Identifier: BSD-2-Clause
-- wrk script: nginx-shaped auth_http requests, a new TCP connection per request.
-- HTTP/1.0 without keep-alive (as nginx's auth_http sends them): the server closes
-- after each answer and wrk reconnects.  Environment:
--   BENCH_USERS  generated users in the directory (userNNNNNN, gen-sample.py)
--   BENCH_HOT    0: every login a random user (cold); N: 90% of logins from a hot set of
--                N users (a mail client burst: the same users log in again and again)
--   BENCH_PASS   the password (gen-sample.py: Sample-pw-0)
local users = tonumber(os.getenv("BENCH_USERS") or "100000")
local hot = tonumber(os.getenv("BENCH_HOT") or "0")
local pass = os.getenv("BENCH_PASS") or "Sample-pw-0"
local width = math.max(3, string.len(tostring(users)))
local fmt = "GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n" ..
            "Auth-User: user%0" .. width .. "d@%s\r\nAuth-Pass: " .. pass .. "\r\n" ..
            "Auth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n"

local threads = {}
ok, other = 0, 0          -- globals: done() reads them with thread:get()

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(os.time() * 1000 + (id or 0) * 7919)
end

local function pick()
   local n
   if hot > 0 and math.random() < 0.9 then
      n = math.random(hot)
   else
      n = math.random(users)
   end
   if n % 10 == 0 then n = n - 1 end          -- users n % 10 == 0 have no mailHost
   if n < 1 then n = 1 end
   return n
end

function request()
   local n = pick()
   local dom = (n <= math.floor((users + 1) / 2)) and "example.com" or "example.net"
   return string.format(fmt, n, dom)
end

function response(status, headers, body)
   if headers["Auth-Status"] == "OK" then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
   local tok, tother = 0, 0
   for _, t in ipairs(threads) do
      tok = tok + (t:get("ok") or 0)
      tother = tother + (t:get("other") or 0)
   end
   io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d " ..
                          "auth_ok=%d auth_other=%d connect_err=%d read_err=%d " ..
                          "write_err=%d timeout=%d status_err=%d\n",
                          summary.requests, summary.duration,
                          latency:percentile(50), latency:percentile(99), tok, tother,
                          summary.errors.connect, summary.errors.read,
                          summary.errors.write, summary.errors.timeout,
                          summary.errors.status))
end
