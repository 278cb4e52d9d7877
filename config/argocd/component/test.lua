-- Tests of the Argo CD health check and refresh action on sample objects:
--   lua5.4 config/argocd/component/test.lua
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local passed, failed = 0, 0

local function run(file, object)
  obj = object
  local chunk = assert(loadfile(dir .. "/" .. file))
  return chunk()
end

local function check(name, ok, detail)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    print("FAIL " .. name .. ": " .. tostring(detail))
  end
end

local function rfc3339(offset)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + offset)
end

local function credential(generation, observed, ready, reason, expires)
  local status = nil
  if observed ~= nil then
    status = {observedGeneration = observed, expiresAt = expires, conditions = {}}
    if ready ~= nil then
      status.conditions = {{type = "Ready", status = ready, reason = reason,
                            message = "Secret pull is current in 3 namespace(s)"}}
    end
  end
  return {apiVersion = "regcred.io/v1alpha1", kind = "ClusterRegistryCredential",
          metadata = {name = "ecr", generation = generation}, status = status}
end

local cases = {
  {"no status yet", credential(1, nil), "Progressing"},
  {"an older generation reported", credential(2, 1, "True", "Synced"), "Progressing"},
  {"no Ready condition", credential(1, 1, nil), "Progressing"},
  {"synced static credential", credential(1, 1, "True", "Synced"), "Healthy"},
  {"synced with a valid token", credential(3, 3, "True", "Synced", rfc3339(3600)), "Healthy"},
  {"Ready but the token expired", credential(1, 1, "True", "Synced", rfc3339(-60)), "Degraded"},
  {"refresh failing, token still valid", credential(1, 1, "False", "AwsAccessDenied", rfc3339(600)), "Degraded"},
  {"expired", credential(1, 1, "False", "Expired", rfc3339(-600)), "Degraded"},
  {"conflict", credential(1, 1, "False", "Conflict"), "Degraded"},
}
for _, c in ipairs(cases) do
  local name, object, want = c[1], c[2], c[3]
  local hs = run("health.lua", object)
  check(name, hs.status == want, "got " .. tostring(hs.status) .. ", want " .. want)
  check(name .. " (message)", type(hs.message) == "string" and #hs.message > 0, hs.message)
end
local expired = run("health.lua", credential(1, 1, "True", "Synced", rfc3339(-60)))
check("the expiry is named", string.find(expired.message, "expired at", 1, true) ~= nil, expired.message)
local failing = run("health.lua", credential(1, 1, "False", "AwsAccessDenied", rfc3339(600)))
check("the reason is named", string.find(failing.message, "AwsAccessDenied", 1, true) ~= nil, failing.message)

local actions = run("discovery.lua", credential(1, 1, "True", "Synced"))
check("refresh is offered", actions.refresh ~= nil and actions.refresh.disabled == false, actions.refresh)
for _, annotations in ipairs({{}, {["regcred.io/refresh"] = "old", keep = "me"}, "none"}) do
  local object = credential(1, 1, "True", "Synced")
  if annotations ~= "none" then object.metadata.annotations = annotations end
  local refreshed = run("refresh.lua", object)
  local value = refreshed.metadata.annotations["regcred.io/refresh"]
  check("refresh sets a new value", value ~= nil and value ~= "old" and value:match("^%d+%-%d+%-%d+T"), value)
  if annotations ~= "none" and annotations.keep then
    check("other annotations are kept", refreshed.metadata.annotations.keep == "me", "lost")
  end
end

-- actions.yaml (what argocd-cm holds) carries exactly the tested code.
local yaml = assert(io.open(dir .. "/actions.yaml")):read("a")
for _, file in ipairs({"discovery.lua", "refresh.lua"}) do
  for line in io.lines(dir .. "/" .. file) do
    local code = line:match("^%s*(.-)%s*$")
    if code ~= "" and not code:match("^%-%-") then
      check(file .. " in actions.yaml: " .. code, string.find(yaml, code, 1, true) ~= nil, "missing")
    end
  end
end

print(string.format("argocd: %d passed, %d failed", passed, failed))
if failed > 0 then os.exit(1) end
