-- Booking workload for wrk and wrk2: POSTs varied bookings, the same sequence on every run.
--
--   wrk  -t2 -c32 -d20s --latency -s workload.lua http://127.0.0.1:5002/book
--   ./wrk2/wrk -t1 -c1 -d20 -R1 --latency http://localhost:5002/book -s workload.lua
--
-- The target decides the body: a URL ending in /book gets reservation.json bodies
-- ({"hotel_id", "user": {...}}); any other URL (e.g. http://127.0.0.1:5001/book_hotel) gets
-- user.json bodies posted to <url>/<hotel_id>.
--
-- Tuned by environment variables (read once per thread):
--   SEED     base seed (default 42); thread i uses SEED + i, so two runs send the same requests
--   HOTELS   bookings go to hotel ids 1..HOTELS (default 300: the whole catalogue); fewer
--            hotels means more contention for the same locks and nights
--   DAYS     stays start within DAYS days from START (default 365)
--   START    first check-in date, YYYY-MM-DD (default tomorrow, UTC: past stays are refused)
--   NIGHTS   longest stay in nights (default 3); stays are 1..NIGHTS nights
--   ROOMS    most rooms per booking (default 1)
--   KEYED    1: every booking carries its own Idempotency-Key header (default 0)

local seed   = tonumber(os.getenv("SEED") or "42")
local hotels = tonumber(os.getenv("HOTELS") or "300")
local days   = tonumber(os.getenv("DAYS") or "365")
local start  = os.getenv("START")
local nights = tonumber(os.getenv("NIGHTS") or "3")
local rooms  = tonumber(os.getenv("ROOMS") or "1")
local keyed  = os.getenv("KEYED") == "1"

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

-- Days since 1970-01-01 for a civil date, and back (proleptic Gregorian).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format("%04d-%02d-%02d", y, m, d)
end

local start_day
if start then
  local sy, sm, sd = start:match("(%d+)-(%d+)-(%d+)")
  start_day = days_from_civil(tonumber(sy), tonumber(sm), tonumber(sd))
else
  start_day = math.floor(os.time() / 86400) + 1
end
local frontend = true
local base_path = "/"
local n = 0

function init(args)
  math.randomseed(seed + (id or 0))
  base_path = wrk.path
  frontend = base_path:match("/book$") ~= nil
end

function request()
  n = n + 1
  local hotel = math.random(1, hotels)
  local check_in = start_day + math.random(0, days - 1)
  local check_out = check_in + math.random(1, nights)
  local user = string.format(
    '{"user_id":"u-%d-%d","name":"Load Test","check_in":"%s","check_out":"%s","rooms":%d}',
    id or 0, n, civil_from_days(check_in), civil_from_days(check_out), math.random(1, rooms))
  local headers = { ["Content-Type"] = "application/json" }
  if keyed then
    headers["Idempotency-Key"] = string.format("k-%d-%d-%d-%d", seed, id or 0, n, os.time())
  end
  if frontend then
    return wrk.format("POST", base_path, headers, string.format('{"hotel_id":%d,"user":%s}', hotel, user))
  end
  return wrk.format("POST", base_path:gsub("/$", "") .. "/" .. hotel, headers, user)
end

function done(summary, latency, requests)
  io.write(string.format("requests: %d, errors: connect %d, read %d, write %d, status %d, timeout %d\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
