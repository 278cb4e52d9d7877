-- Asks regcred to re-read the sources (or mint a new token) and rewrite every Secret now:
-- any new value of regcred.io/refresh does that; status echoes it when done.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["regcred.io/refresh"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
