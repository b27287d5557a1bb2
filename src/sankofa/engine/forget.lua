-- Take records back out of customer / terminal histories (see features.lua).
-- KEYS: the histories; ARGV: per key, [2i-1] the id hash (8 bytes) and [2i]
-- its byte offset inside a 24-byte record (16 for a customer, 8 for a terminal).
for i = 1, #KEYS do
  local hash, at = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local blob = redis.call('GET', KEYS[i])
  if blob then
    local pos = string.find(blob, hash, 1, true)
    while pos and (pos - 1) % 24 ~= at do
      pos = string.find(blob, hash, pos + 1, true)
    end
    if pos then
      local start = pos - at
      local rest = string.sub(blob, 1, start - 1) .. string.sub(blob, start + 24)
      if #rest == 0 then
        redis.call('DEL', KEYS[i])
      else
        redis.call('SET', KEYS[i], rest, 'KEEPTTL')
      end
    end
  end
end
return 1
