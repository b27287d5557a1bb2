-- features.lua for one slot group of a Redis Cluster (engine.features_cluster).
--
-- A transaction's customer and terminal histories usually live in different
-- slots, and a script may only touch keys of one slot: so here each history
-- is an item of its own. The service sends one call per slot group (every
-- key of a call hash-tagged to the group's slot), a transaction's customer
-- item to its customer's group and its terminal item to its terminal's, and
-- joins the replies into features.lua's reply. The per-key work is
-- features.lua's, line for line: a history sees the batch's items in batch
-- order, whichever call carries them.
--
-- KEYS: per item i, a customer or terminal history.
-- ARGV: [1] customer horizon, [2] terminal horizon, [3] key ttl in seconds (as
--       features.lua), [4] per item 24 bytes (time double, cents double, id
--       hash 8 bytes), [5] per item one byte: 'c' customer history, 't' terminal.
--
-- Reply, all little-endian doubles then bytes:
--   [number of items n] [number of distinct keys m]
--   per item: appended (1/0), key index (0-based), first, end (in records, end exclusive)
--   per distinct key: its record count
--   then every distinct key's records, in key order.

local chorizon = tonumber(ARGV[1])
local thorizon = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local batch = ARGV[4]
local kinds = ARGV[5]
local n = #KEYS
local NOFRAUD = struct.pack('<d', 0)

local find, unpack = string.find, struct.unpack
local index = {}     -- key name -> key index (1-based)
local names = {}     -- key index -> name
local base = {}      -- key index -> history as read (string, false when absent)
local baselen = {}   -- key index -> records in it
local added = {}     -- key index -> list of appended records (strings), when any
local addtimes = {}  -- key index -> their times
local hashes = {}    -- key index -> set of id hashes appended in this batch
local first = {}     -- key index -> first record still kept (0-based)

local function key_of(name)
  local k = index[name]
  if k then return k end
  k = #names + 1
  index[name] = k
  names[k] = name
  local blob = redis.call('GET', name)
  base[k] = blob
  baselen[k] = blob and #blob / 24 or 0
  first[k] = 0
  return k
end

local function time_at(k, r)  -- record r (0-based) of key k
  local nb = baselen[k]
  if r < nb then return (unpack('<d', base[k], r * 24 + 1)) end
  return addtimes[k][r - nb + 1]
end

local function holds(k, hash, at)
  local h = hashes[k]
  if h and h[hash] then return true end
  local blob = base[k]
  if not blob then return false end
  local pos = find(blob, hash, 1, true)
  while pos do
    if (pos - 1) % 24 == at and (pos - 1 - at) / 24 >= first[k] then return true end
    pos = find(blob, hash, pos + 1, true)
  end
  return false
end

-- Append (unless already there), trim the front, return (appended, first, end).
local function add(k, rec, t, hash, at, oldest)
  local appended = false
  if not holds(k, hash, at) then
    local list = added[k]
    if not list then
      list = {}
      added[k] = list
      addtimes[k] = {}
      hashes[k] = {}
    end
    list[#list + 1] = rec
    local times = addtimes[k]
    times[#times + 1] = t
    hashes[k][hash] = true
    appended = true
  end
  local list = added[k]
  local total = baselen[k] + (list and #list or 0)
  local f = first[k]
  while f < total and time_at(k, f) < oldest do f = f + 1 end
  first[k] = f
  return appended, f, total
end

local heads = {}
for i = 1, n do
  local off = (i - 1) * 24
  local t = unpack('<d', batch, off + 1)
  local hash = string.sub(batch, off + 17, off + 24)
  local k = key_of(KEYS[i])
  local a, f, e
  if string.byte(kinds, i) == 99 then  -- 'c'
    a, f, e = add(k, string.sub(batch, off + 1, off + 24), t, hash, 16, t - chorizon)
  else
    a, f, e = add(k, string.sub(batch, off + 1, off + 8) .. hash .. NOFRAUD, t, hash, 8, t - thorizon)
  end
  heads[i] = struct.pack('<dddd', a and 1 or 0, k - 1, f, e)
end

-- Write each touched key once: whole (new or trimmed, with its ttl) or by one append.
local counts = {}
local bodies = {}
for k = 1, #names do
  local appended = added[k] and table.concat(added[k]) or ''
  local full = (base[k] or '') .. appended
  bodies[k] = full
  counts[k] = struct.pack('<d', #full / 24)
  local f = first[k]
  if f > 0 then
    local kept = string.sub(full, f * 24 + 1)
    if #kept == 0 then
      redis.call('DEL', names[k])
    else
      redis.call('SET', names[k], kept, 'EX', ttl)
    end
  elseif #appended > 0 then
    if base[k] then
      redis.call('APPEND', names[k], appended)
    else
      redis.call('SET', names[k], full, 'EX', ttl)
    end
  end
end
return struct.pack('<dd', n, #names) .. table.concat(heads) .. table.concat(counts) .. table.concat(bodies)
