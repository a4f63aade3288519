-- The worked example adapter of docs/adapters.md against the shared
-- storage contract, loaded the way the docs tell adapter authors to.
local chronis = require "chronis"

local function require_adapter(path)
  return assert(loadfile(path, "t"))()
end

local new_store = require_adapter("scripts/adapters/example_kv.lua")

require("support.storage_contract")("example_kv", function() return new_store() end)

describe("example_kv adapter", function()
  it("refuses an unknown option, naming it", function()
    local ok, err = pcall(new_store, { bogus = 1 })
    assert.is_false(ok)
    assert.are.equal("invalid", err.code)
    assert.truthy(err.message:find("bogus", 1, true), err.message)
    new_store({ adapter_timeout = "5" }):close() -- the bridge's option, passed along
  end)

  it("gives each instance its own jobs", function()
    local a, b = new_store(), new_store()
    a:create_job({ job_id = "x", status = "scheduled", next_run_time = "2025-01-15T10:00:00Z" })
    assert.is_nil(b:get_job("x"))
    assert.are.equal(1, a:count_jobs())
    a:close()
    b:close()
  end)

  it("extends only the leases of running jobs the owner holds", function()
    local s = new_store()
    local T0 = chronis.time.parse("2025-01-15T10:00:00Z")
    s:create_job({ job_id = "mine", status = "running", claimed_by = "a", lease_until = T0 })
    s:create_job({ job_id = "theirs", status = "running", claimed_by = "b", lease_until = T0 })
    s:create_job({ job_id = "idle", status = "scheduled", claimed_by = "a", next_run_time = T0 })
    local n = s:extend_leases({ now = T0, lease_seconds = 60, owner = "a",
      ids = { "mine", "theirs", "idle", "ghost" } })
    assert.are.equal(1, n)
    assert.are.equal("2025-01-15T10:01:00Z", s:get_job("mine").lease_until)
    assert.are.equal("2025-01-15T10:00:00Z", s:get_job("theirs").lease_until)
    s:close()
  end)

  it("reports the earliest due time of scheduled jobs only", function()
    local s = new_store()
    assert.is_nil(s:next_due_time())
    s:create_job({ job_id = "p", status = "paused", next_run_time = "2025-01-15T09:00:00Z" })
    s:create_job({ job_id = "a", status = "scheduled", next_run_time = "2025-01-15T10:00:00.5Z" })
    s:create_job({ job_id = "b", status = "scheduled", next_run_time = "2025-01-15T11:00:00+01:00" })
    assert.are.equal("2025-01-15T10:00:00Z", s:next_due_time())
    s:close()
  end)
end)
