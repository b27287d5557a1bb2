-- Online feature state for a batch of transactions, in one round trip.
--
-- Redis keeps, per customer and per terminal, a compact history: a string of
-- fixed-size little-endian records, appended in arrival order.
--   customer record (24 bytes): event time (double), amount in cents (double), id hash (8 bytes)
--   terminal record (24 bytes): event time (double), id hash (8 bytes), fraud label (double, 0/1)
-- This script appends each transaction to its customer's and terminal's
-- history (unless that id is already there) and returns the histories as they
-- stand after it, so that the service computes every window with numpy on its
-- side: Redis only copies bytes, four commands per transaction.
--
-- KEYS: per transaction i (1-based): KEYS[2i-1] customer history, KEYS[2i] terminal history.
-- ARGV: [1] customer horizon, [2] terminal horizon (seconds of history kept
--       behind each transaction's time), [3] key ttl in seconds, [4] the batch:
--       per transaction 24 bytes (time double, cents double, id hash 8 bytes).
--
-- Returns one string: n headers of 3 doubles (flags, customer history length,
-- terminal history length), then for each transaction its customer history
-- and its terminal history. flags: 1 = appended to the customer history,
-- 2 = appended to the terminal history.
--
-- Expiry: a key gets its ttl when created and whenever old records are
-- trimmed from it, which happens at least once per horizon for an active key;
-- the ttl is longer than both horizons, so only idle keys expire.

local chorizon = tonumber(ARGV[1])
local thorizon = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local batch = ARGV[4]
local n = #KEYS / 2
local NOFRAUD = struct.pack('<d', 0)

-- Whether `blob` holds `hash` at byte offset `at` of some record of 24 bytes.
local function holds(blob, hash, at)
  local pos = string.find(blob, hash, 1, true)
  while pos do
    if (pos - 1) % 24 == at then return true end
    pos = string.find(blob, hash, pos + 1, true)
  end
  return false
end

-- Append `rec` (unless already there), drop records older than `oldest` from
-- the front, and return the history as it stands.
local function add(key, rec, hash, at, oldest)
  local blob = redis.call('GET', key)
  local added = false
  if not blob then
    blob = rec
    redis.call('SET', key, blob, 'EX', ttl)
    return blob, true
  end
  if not holds(blob, hash, at) then
    redis.call('APPEND', key, rec)
    blob = blob .. rec
    added = true
  end
  local cut = 0
  local len = #blob
  while cut < len and struct.unpack('<d', blob, cut + 1) < oldest do
    cut = cut + 24
  end
  if cut > 0 then
    blob = string.sub(blob, cut + 1)
    if #blob == 0 then
      redis.call('DEL', key)
    else
      redis.call('SET', key, blob, 'EX', ttl)
    end
  end
  return blob, added
end

local heads = {}
local bodies = {}
for i = 1, n do
  local off = (i - 1) * 24
  local t = struct.unpack('<d', batch, off + 1)
  local time = string.sub(batch, off + 1, off + 8)
  local hash = string.sub(batch, off + 17, off + 24)
  local flags = 0

  local cblob, cadded = add(KEYS[2 * i - 1], string.sub(batch, off + 1, off + 24), hash, 16, t - chorizon)
  if cadded then flags = flags + 1 end
  local tblob, tadded = add(KEYS[2 * i], time .. hash .. NOFRAUD, hash, 8, t - thorizon)
  if tadded then flags = flags + 2 end

  heads[i] = struct.pack('<ddd', flags, #cblob, #tblob)
  bodies[2 * i - 1] = cblob
  bodies[2 * i] = tblob
end
return table.concat(heads) .. table.concat(bodies)
