-- Paths where UndefinedBehaviorSanitizer found undefined behaviour in
-- chronis code. Each test asserts what a user sees; the undefined
-- behaviour itself shows only under `make test SANITIZER=address,undefined`,
-- where spec/run.sh fails this file on the report, naming the line.
local chronis = require "chronis"
local U = require "support.util"

local NOW = chronis.time.format(chronis.time.now())

after_each(function() U.assert_loop_clean(2) end)

describe("an answer with no jobs is not sorted", function()
  -- Sorting or moving an empty list passed a null array to qsort and
  -- memmove, whose arguments must never be null even for zero elements.

  it("a Redis query that C filters and pages, matching nothing", function()
    local server = require("support.redis").start()
    local store = chronis.storage.open(server.url)
    -- A metadata filter is applied in C, which then orders and pages.
    assert.are.same({}, store:query_jobs({ ["metadata.team"] = "none" }, 10, 0))
    assert.are.same({}, store:query_jobs({ ["metadata.team"] = "none" }))
    store:close()
    server:stop()
  end)

  it("a SQLite claim with jobs scheduled but none due", function()
    local dir = U.tmpdir("chronis-undefined")
    local store = chronis.storage.open("sqlite:" .. dir .. "/jobs.db")
    local later = chronis.time.format(chronis.time.parse(NOW) + 3600 * 1000000)
    store:create_job({ job_id = "later", status = "scheduled", next_run_time = later, func_name = "h",
      trigger_type = "date", trigger_args = { run_date = later } })
    assert.are.same({}, store:claim_due_jobs({ now = NOW, limit = 10, owner = "n1", lease_seconds = 30 }))
    store:close()
    U.remove_tree(dir)
  end)

  it("the emulated claim of a Lua adapter without claim_due_jobs, with nothing due", function()
    local store = U.minimal_store()
    assert.are.same({}, store:claim_due_jobs({ now = NOW, limit = 10, owner = "n1", lease_seconds = 30 }))
    store:close()
  end)
end)
