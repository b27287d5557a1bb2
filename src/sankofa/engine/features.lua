-- Online features for a batch of transactions, in one round trip.
--
-- KEYS: for transaction i (1-based), KEYS[3i-2] the customer zset,
--       KEYS[3i-1] the terminal zset, KEYS[3i] the terminal's fraud zset.
-- ARGV: [1] day in seconds, [2] label delay in seconds, [3] trim grace in seconds,
--       [4] key ttl in seconds, [5] number of customer windows nc, [6..5+nc] their
--       lengths in days, then nt, then the terminal window lengths in days, then
--       per transaction: id, event time (seconds), amount in cents.
--
-- Transactions are processed in order, so each one sees the earlier ones of the
-- same batch. A transaction already present (same id, same customer and amount)
-- is not added twice: its features are computed but nothing is counted again.
--
-- Returns, per transaction: flags (1 = added to the customer set, 2 = added to
-- the terminal set), then per customer window count and summed cents, then per
-- terminal window count and frauds.

local day = tonumber(ARGV[1])
local delay = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local nc = tonumber(ARGV[5])
local cwin = {}
for w = 1, nc do cwin[w] = tonumber(ARGV[5 + w]) * day end
local nt = tonumber(ARGV[6 + nc])
local twin = {}
for w = 1, nt do twin[w] = tonumber(ARGV[6 + nc + w]) * day end
local base = 6 + nc + nt
local cmax = cwin[nc]
local tmax = twin[nt] + delay

local out = {}
local n = #KEYS / 3
for i = 1, n do
  local ck, tk, fk = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local a = base + 3 * (i - 1)
  local id, t, cents = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]

  local flags = 0
  if redis.call('ZADD', ck, 'NX', t, cents .. ':' .. id) == 1 then flags = flags + 1 end
  if redis.call('ZADD', tk, 'NX', t, id) == 1 then flags = flags + 2 end
  out[#out + 1] = flags

  -- Customer windows (t - w, t], this transaction included.
  local counts, sums = {}, {}
  for w = 1, nc do counts[w] = 0; sums[w] = 0 end
  local rows = redis.call('ZRANGEBYSCORE', ck, '(' .. string.format('%.6f', t - cmax), t, 'WITHSCORES')
  for j = 1, #rows, 2 do
    local m = rows[j]
    local s = tonumber(rows[j + 1])
    local c = tonumber(string.sub(m, 1, string.find(m, ':', 1, true) - 1))
    for w = 1, nc do
      if s > t - cwin[w] then
        counts[w] = counts[w] + 1
        sums[w] = sums[w] + c
      end
    end
  end
  for w = 1, nc do
    out[#out + 1] = counts[w]
    out[#out + 1] = sums[w]
  end

  -- Terminal windows (t - delay - w, t - delay]: only what labels can be known for.
  local hi = string.format('%.6f', t - delay)
  for w = 1, nt do
    local lo = '(' .. string.format('%.6f', t - delay - twin[w])
    out[#out + 1] = redis.call('ZCOUNT', tk, lo, hi)
    out[#out + 1] = redis.call('ZCOUNT', fk, lo, hi)
  end

  -- Forget what no window of this transaction's time can reach any more.
  redis.call('ZREMRANGEBYSCORE', ck, '-inf', '(' .. string.format('%.6f', t - cmax - grace))
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', '(' .. string.format('%.6f', t - tmax - grace))
  redis.call('ZREMRANGEBYSCORE', fk, '-inf', '(' .. string.format('%.6f', t - tmax - grace))
  redis.call('EXPIRE', ck, ttl)
  redis.call('EXPIRE', tk, ttl)
  redis.call('EXPIRE', fk, ttl)
end
return out
