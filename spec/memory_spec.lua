local chronis = require "chronis"

require("support.storage_contract")("memory", function() return chronis.storage.memory() end)
require("support.engine_contract")("memory", function() return chronis.storage.memory() end)
require("support.lock_contract")("memory", function() return chronis.lock.memory() end)

describe("memory store", function()
  local T0 = chronis.time.parse("2025-01-15T10:00:00Z")
  local S = 1000000

  it("opens from the URL memory:", function()
    local s = chronis.storage.open("memory:")
    s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0 })
    assert.are.equal("a", s:get_job("a").job_id)
    assert.are.equal(1, #s:query_jobs())
    s:close()
  end)

  it("refuses an unknown scheme with error 'invalid' naming it", function()
    local ok, err = pcall(chronis.storage.open, "bogus:x")
    assert.is_false(ok)
    assert.is_table(err)
    assert.are.equal("invalid", err.code)
    assert.truthy(tostring(err.message):find("bogus", 1, true), err.message)
  end)

  -- A job whose every run aged out is forgotten: its entry went with its
  -- last run, and the id it was found by is that run's.
  it("forgets a job whose runs all aged out, keeping the others' runs", function()
    local s = chronis.storage.memory()
    local now = chronis.time.now()
    local function run(id, job_id, started)
      return { run_id = id, job_id = job_id, outcome = "ok", started_at = started }
    end
    local old, new = {}, {}
    for i = 1, 50 do
      old[i] = run("old" .. i, "gone" .. i, now - 30 * 86400 * S)
      new[i] = run("new" .. i, "kept" .. i, now - i * S)
    end
    s:record_runs(old)
    s:record_runs(new)
    assert.are.same({}, s:query_runs({ job_id = "gone1" }))
    assert.are.equal(50, #s:query_runs())
    s:record_runs({ run("again", "gone1", now) })
    assert.are.equal("again", s:query_runs("gone1")[1].run_id)
    s:close()
  end)

  it("gives each instance its own jobs", function()
    local a, b = chronis.storage.memory(), chronis.storage.open("memory:")
    a:create_job({ job_id = "x", status = "scheduled", next_run_time = T0 })
    assert.is_nil(b:get_job("x"))
    assert.are.same({}, b:query_jobs())
    b:create_job({ job_id = "x", status = "paused", next_run_time = T0 })
    assert.are.equal("scheduled", a:get_job("x").status)
    a:close()
    b:close()
  end)

  describe("with 100,000 jobs", function()
    local N = 100000
    local s
    -- Job k (0-based) is due at T0 + k s with priority k % 11 and is paused
    -- when k % 10 == 3; jobs are created in a scrambled order.
    local function paused(k) return k % 10 == 3 end

    setup(function()
      s = chronis.storage.memory()
      for i = 0, N - 1 do
        local k = (i * 7919) % N
        s:create_job({
          job_id = ("job%06d"):format(k),
          status = paused(k) and "paused" or "scheduled",
          next_run_time = T0 + k * S,
          priority = k % 11,
          metadata = { tenant_id = "t" .. (k % 7) },
        })
      end
    end)

    teardown(function() s:close() end)

    it("answers a limited status query in order", function()
      local got = s:query_jobs({ status = "scheduled" }, 10, 5)
      local want, k = {}, 0
      while #want < 15 do
        if not paused(k) then want[#want + 1] = ("job%06d"):format(k) end
        k = k + 1
      end
      local ids = {}
      for i, j in ipairs(got) do ids[i] = j.job_id end
      assert.are.same({ table.unpack(want, 6, 15) }, ids)
      local last = s:query_jobs({ status = "paused" }, 2, 9998)
      assert.are.equal("job099983", last[1].job_id)
      assert.are.equal("job099993", last[2].job_id)
      assert.are.same({}, s:query_jobs({ status = "paused" }, 2, 10000))
    end)

    it("counts by status and metadata", function()
      assert.are.equal(N, s:count_jobs())
      assert.are.equal(N // 10, s:count_jobs({ status = "paused" }))
      assert.are.equal(N - N // 10, s:count_jobs({ status = "scheduled" }))
      assert.are.equal(0, s:count_jobs({ status = "running" }))
      local t3 = 0
      for k = 0, N - 1 do
        if k % 7 == 3 and not paused(k) then t3 = t3 + 1 end
      end
      assert.are.equal(t3, s:count_jobs({ status = "scheduled", ["metadata.tenant_id"] = "t3" }))
    end)

    it("claims the highest-priority due jobs first", function()
      -- Due at T0 + 100 s: k = 0..100 not paused; priority 10 first.
      local due = {}
      for k = 0, 100 do
        if not paused(k) then due[#due + 1] = k end
      end
      table.sort(due, function(x, y)
        if x % 11 ~= y % 11 then return x % 11 > y % 11 end
        return x < y
      end)
      local got = s:claim_due_jobs({ now = T0 + 100 * S, limit = 5, owner = "n", lease_seconds = 30 })
      local ids, want = {}, {}
      for i = 1, 5 do want[i] = ("job%06d"):format(due[i]) end
      for i, j in ipairs(got) do
        ids[i] = j.job_id
        assert.are.equal("running", j.status)
        assert.are.equal("n", j.claimed_by)
      end
      assert.are.same({ "job000010", "job000021", "job000032", "job000054", "job000065" }, want)
      assert.are.same(want, ids)
      assert.are.equal(5, s:count_jobs({ status = "running" }))
      assert.are.equal("job000000", s:query_jobs({ status = "scheduled" }, 1)[1].job_id)
    end)
  end)
end)
