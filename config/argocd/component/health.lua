-- Argo CD health of a RegistryCredential or ClusterRegistryCredential (regcred.io).
-- Healthy: Ready=True and the token in the Secrets not expired.
-- Progressing: the controller has not yet reported on the current generation.
-- Degraded: anything else, with regcred's own message.
local hs = {}

-- Seconds since the epoch of an RFC 3339 UTC time ("2026-11-30T12:00:00Z"), or nil.
local function epoch(text)
  if text == nil then return nil end
  local y, mo, d, h, mi, s = string.match(text, "^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if y == nil then return nil end
  -- os.time reads the table as local time; so does the "now" below: the offset cancels.
  return os.time({year = tonumber(y), month = tonumber(mo), day = tonumber(d),
                  hour = tonumber(h), min = tonumber(mi), sec = tonumber(s)})
end

local status = obj.status
if status == nil or status.observedGeneration == nil
    or (obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for regcred to reconcile the current generation"
  return hs
end

local ready = nil
for _, c in ipairs(status.conditions or {}) do
  if c.type == "Ready" then ready = c end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

local expires = epoch(status.expiresAt)
local now = os.time(os.date("!*t"))
if expires ~= nil and expires <= now then
  hs.status = "Degraded"
  hs.message = "The token in the Secrets expired at " .. status.expiresAt .. ": " .. (ready.message or "")
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
else
  hs.status = "Degraded"
end
hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
return hs
