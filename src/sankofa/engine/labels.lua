-- Set the fraud label of transactions in their terminal's history (see features.lua).
-- KEYS: terminal histories; ARGV: per key, [2i-1] the transaction's id hash
-- (8 bytes) and [2i] the label as a packed little-endian double (0 or 1).
-- A transaction no longer in the history (older than every window) is skipped.
-- Returns how many labels were written.
local written = 0
for i = 1, #KEYS do
  local hash, label = ARGV[2 * i - 1], ARGV[2 * i]
  local blob = redis.call('GET', KEYS[i])
  if blob then
    local pos = string.find(blob, hash, 1, true)
    while pos and (pos - 1) % 24 ~= 8 do
      pos = string.find(blob, hash, pos + 1, true)
    end
    if pos then
      redis.call('SETRANGE', KEYS[i], pos - 1 + 8, label)
      written = written + 1
    end
  end
end
return written
