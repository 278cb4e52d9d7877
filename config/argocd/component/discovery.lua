-- The "refresh" action is always available.
local actions = {}
actions["refresh"] = {["disabled"] = false}
return actions
