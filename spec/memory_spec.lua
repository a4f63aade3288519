local chronis = require "chronis"

require("support.storage_contract")("memory", function() return chronis.storage.memory() end)
require("support.engine_contract")("memory", function() return chronis.storage.memory() end)
require("support.lock_contract")("memory", function() return chronis.lock.memory() end)
require("support.storage_contract")("memory indexed", function()
  return chronis.storage.open("memory:?index_metadata=tenant_id")
end)
require("support.engine_contract")("memory indexed", function()
  return chronis.storage.open("memory:?index_metadata=tenant_id")
end)

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

  describe("index_metadata", function()
    local null = chronis.json.null

    local function ids_of(jobs)
      local out = {}
      for i, j in ipairs(jobs) do out[i] = j.job_id end
      return out
    end

    local function merged(a, b)
      local out = {}
      for k, v in pairs(a or {}) do out[k] = v end
      for k, v in pairs(b or {}) do out[k] = v end
      return out
    end

    local function claim_before(x, y)
      local px, py = x.priority or 5, y.priority or 5
      if px ~= py then return px > py end
      local tx, ty = chronis.time.parse(x.next_run_time), chronis.time.parse(y.next_run_time)
      if tx ~= ty then return tx < ty end
      return x.job_id < y.job_id
    end

    it("refuses a malformed or repeated path with 'invalid' naming the option and the path", function()
      -- The message quotes the URL, so the path is looked for after it.
      for _, case in ipairs({ { "tenant..id", "'tenant..id' is not" }, { "tenant_id,tenant_id", "'tenant_id' is named twice" },
          { "region,tenant id", "'tenant id' is not" }, { "$x", "'$x' is not" }, { ".a", "'.a' is not" },
          { "a,,b", "an empty path" }, { "tenant_id,", "an empty path" }, { "", "an empty path" } }) do
        local ok, err = pcall(chronis.storage.open, "memory:?index_metadata=" .. case[1])
        assert.is_false(ok, case[1])
        assert.are.equal("invalid", err.code, case[1])
        local msg = tostring(err.message)
        assert.truthy(msg:find("': index_metadata: " .. case[2], 1, true), msg)
      end
      local ok, err = pcall(chronis.storage.open, { scheme = "memory", index_metadata = "org.id,x y" })
      assert.is_false(ok)
      assert.are.equal("invalid", err.code)
      assert.truthy(tostring(err.message):find("'x y'", 1, true), err.message)
      ok, err = pcall(chronis.storage.open, { scheme = "memory", index_metdata = "tenant_id" })
      assert.is_false(ok)
      assert.are.equal("invalid", err.code)
      assert.truthy(tostring(err.message):find("did you mean 'index_metadata'", 1, true), err.message)
      local s = chronis.storage.open({ scheme = "memory", index_metadata = "tenant_id,org.id" })
      s:close()
    end)

    it("claims a tenant's due jobs in claim order and leaves the others'", function()
      local s = chronis.storage.open("memory:?index_metadata=tenant_id")
      -- Tenant a: priorities 1..3, due at T0 + k s; tenant b: more urgent.
      for k = 1, 9 do
        s:create_job({ job_id = ("a%d"):format(k), status = "scheduled", next_run_time = T0 + k * S,
          priority = k % 3 + 1, metadata = { tenant_id = "a" } })
        s:create_job({ job_id = ("b%d"):format(k), status = "scheduled", next_run_time = T0 - k * S,
          priority = 9, metadata = { tenant_id = "b" } })
      end
      s:create_job({ job_id = "a-later", status = "scheduled", next_run_time = T0 + 3600 * S,
        priority = 10, metadata = { tenant_id = "a" } })
      local scope = { ["metadata.tenant_id"] = "a" }
      local got = s:claim_due_jobs({ now = T0 + 6 * S, limit = 4, owner = "n", filters = scope })
      -- Due: a1..a6; priorities 2,3,1,2,3,1: a2, a5 (3), a1, a4 (2).
      assert.are.same({ "a2", "a5", "a1", "a4" }, ids_of(got))
      for _, j in ipairs(got) do assert.are.equal("running", j.status) end
      assert.are.same({ "a3", "a6" },
        ids_of(s:claim_due_jobs({ now = T0 + 6 * S, owner = "n", filters = scope })))
      assert.are.same({}, s:claim_due_jobs({ now = T0 + 6 * S, owner = "n", filters = scope }))
      assert.are.equal(9, s:count_jobs({ ["metadata.tenant_id"] = "b", status = "scheduled" }))
      local parse = chronis.time.parse
      assert.are.equal(T0 + 7 * S, parse(s:next_due_time(scope)))
      assert.are.equal(T0 - 9 * S, parse(s:next_due_time({ ["metadata.tenant_id"] = { ["$in"] = { "a", "b" } } })))
      assert.is_nil(s:next_due_time({ ["metadata.tenant_id"] = "nobody" }))
      -- A tenant that moves takes its due jobs along.
      s:update_job("b1", { metadata = { tenant_id = "a" } })
      assert.are.same({ "b1" }, ids_of(s:claim_due_jobs({ now = T0, owner = "n", filters = scope })))
      -- Leases expire per tenant.
      assert.are.equal(0, s:recover_expired_leases(T0 + 3600 * S, { ["metadata.tenant_id"] = "b" }))
      assert.are.equal(7, s:recover_expired_leases(T0 + 3600 * S, scope))
      -- a1..a6 and b1 recovered, a7..a9 and a-later never claimed.
      assert.are.equal(7 + 4, s:count_jobs({ ["metadata.tenant_id"] = "a", status = "scheduled" }))
      s:close()
    end)

    -- The same random operations on a store with the index and one
    -- without: every answer must be the same, and the claims, next due
    -- times and recoveries must be what query_jobs says they should be.
    it("answers as the unindexed store over 3,000 random operations", function()
      local plain = chronis.storage.open("memory:")
      local idx = chronis.storage.open("memory:?index_metadata=tenant_id,org.id")
      local seed = 20261206
      local function rand(n) -- 1..n, a fixed sequence (64-bit LCG, high bits)
        seed = (seed * 6364136223846793005 + 1442695040888963407)
        return ((seed >> 33) % n) + 1
      end
      local function pick(list) return list[rand(#list)] end
      local tenants = { "t1", "t2", "t3", "t4" }
      local function metadata()
        local r = rand(10)
        if r == 1 then return nil end
        if r == 2 then return { region = pick({ "eu", "us" }) } end
        if r == 3 then return { tenant_id = rand(3), org = { id = pick(tenants) } } end
        return { tenant_id = pick(tenants), region = pick({ "eu", "us" }),
          org = rand(2) == 1 and { id = pick(tenants) } or nil }
      end
      local function meta_update()
        local r = rand(6)
        if r == 1 then return { tenant_id = null } end
        if r == 2 then return { org = { id = pick(tenants) } } end
        if r == 3 then return { region = pick({ "eu", "us" }) } end
        return { tenant_id = pick(tenants) }
      end
      local scopes = {
        false,
        { ["metadata.tenant_id"] = "t1" },
        { ["metadata.tenant_id"] = { ["$in"] = { "t2", "t3", "t2" } } },
        { ["metadata.tenant_id"] = "t4", ["metadata.region"] = "eu" },
        { ["metadata.tenant_id"] = 2 },
        { ["metadata.region"] = "us" },
        { ["metadata.org.id"] = "t1", ["metadata.tenant_id"] = { ["$in"] = { "t1", "t2" } } },
        { ["metadata.tenant_id"] = { ["$ne"] = "t1" } },
        { ["metadata.tenant_id"] = { ["$in"] = {} } },
        { ["metadata.tenant_id"] = "nobody" },
      }
      local clock, n = T0, 0
      local function both(f)
        local ok1, a = pcall(f, plain)
        local ok2, b = pcall(f, idx)
        assert.are.equal(ok1, ok2, tostring(a) .. " / " .. tostring(b))
        if not ok1 then
          assert.are.equal(a.code, b.code)
          return nil
        end
        return a, b
      end
      local function same_jobs(a, b, what)
        assert.are.same(ids_of(a), ids_of(b), what)
        for i = 1, #a do
          assert.are.same(a[i].metadata, b[i].metadata, what)
          assert.are.equal(a[i].status, b[i].status, what)
        end
      end
      local function any_id()
        if n == 0 or rand(20) == 1 then return "missing" end
        return ("j%d"):format(rand(n))
      end
      local function check_queries(step)
        for i, sc in ipairs(scopes) do
          local base = sc or {}
          for _, extra in ipairs({ {}, { status = "scheduled" }, { status = { "running", "paused" } },
              { next_run_time_gte = clock - 20 * S, next_run_time_lte = clock + 20 * S } }) do
            local f = merged(base, extra)
            local what = ("step %d, scope %d"):format(step, i)
            local a, b = both(function(s) return s:query_jobs(f) end)
            same_jobs(a, b, what)
            local la, lb = both(function(s) return s:query_jobs(f, 5, 3) end)
            same_jobs(la, lb, what .. " (limit 5, offset 3)")
            assert.are.same({ table.unpack(ids_of(a), 4, 8) }, ids_of(la), what)
            local ca, cb = both(function(s) return s:count_jobs(f) end)
            assert.are.equal(#a, ca, what)
            assert.are.equal(ca, cb, what)
          end
          local a, b = both(function(s) return s:next_due_time(sc or nil) end)
          local first = plain:query_jobs(merged(base, { status = "scheduled" }), 1)[1]
          assert.are.equal(first and chronis.time.parse(first.next_run_time), a and chronis.time.parse(a),
            "next due, scope " .. i)
          assert.are.equal(a, b, "next due, scope " .. i)
        end
      end
      for step = 1, 3000 do
        local op = rand(100)
        clock = clock + rand(3) * S
        if op <= 25 then
          n = n + 1
          local id = rand(30) == 1 and any_id() or ("j%d"):format(n)
          local job = { job_id = id, status = rand(5) == 1 and "paused" or "scheduled",
            next_run_time = clock + (rand(61) - 31) * S, priority = rand(4) ~= 1 and rand(10) or nil,
            metadata = metadata() }
          local a, b = both(function(s) return s:create_job(job) end)
          if a then same_jobs({ a }, { b }, "create") end
        elseif op <= 40 then
          local id, upd = any_id(), {}
          if rand(2) == 1 then upd.metadata = meta_update() end
          if rand(3) == 1 then upd.priority = rand(10) end
          if rand(3) == 1 then upd.next_run_time = clock + (rand(61) - 31) * S end
          if rand(4) == 1 then upd.status = pick({ "scheduled", "paused" }) end
          local a, b = both(function(s) return s:update_job(id, upd) end)
          if a then same_jobs({ a }, { b }, "update " .. id) end
        elseif op <= 47 then
          local id = any_id()
          local a, b = both(function(s) return s:delete_job(id) end)
          assert.are.equal(a, b, "delete " .. id)
        elseif op <= 62 then
          local sc, limit = pick(scopes) or nil, rand(4) == 1 and 100 or rand(5)
          local due = plain:query_jobs(merged(sc, { status = "scheduled", next_run_time_lte = clock }))
          table.sort(due, claim_before)
          local want = { table.unpack(ids_of(due), 1, limit) }
          local req = { now = clock, limit = limit, owner = "o" .. rand(2), lease_seconds = rand(20),
            filters = sc }
          local a, b = both(function(s) return s:claim_due_jobs(req) end)
          assert.are.same(want, ids_of(a), "claim at step " .. step)
          same_jobs(a, b, "claim at step " .. step)
        elseif op <= 75 then
          local running = plain:query_jobs({ status = "running" })
          if #running > 0 then
            local j = pick(running)
            local item = { job_id = j.job_id, owner = rand(6) == 1 and "other" or j.claimed_by }
            local r = rand(4)
            if r == 1 then
              item.delete = true
            else
              item.updates = { status = r == 2 and "completed" or "scheduled",
                next_run_time = r == 2 and null or clock + rand(30) * S,
                claimed_by = null, lease_until = null, metadata = rand(2) == 1 and meta_update() or nil }
            end
            local a, b = both(function(s) return s:complete_jobs({ item }) end)
            assert.are.same(a, b, "complete " .. j.job_id)
          end
        elseif op <= 82 then
          local sc = pick(scopes) or nil
          local want = 0
          for _, j in ipairs(plain:query_jobs(merged(sc, { status = "running" }))) do
            if chronis.time.parse(j.lease_until) < clock then want = want + 1 end
          end
          local a, b = both(function(s) return s:recover_expired_leases(clock, sc) end)
          assert.are.equal(want, a, "recover at step " .. step)
          assert.are.equal(a, b, "recover at step " .. step)
        elseif op <= 92 then
          local id = any_id()
          local cur = plain:get_job(id)
          local expected = { status = cur and rand(4) ~= 1 and cur.status or "paused" }
          local upd = { metadata = meta_update(), priority = rand(10) }
          local ok1, ok2 = both(function(s) return s:compare_and_swap_job(id, expected, upd) end)
          assert.are.equal(ok1, ok2, "cas " .. id)
          if ok1 then same_jobs({ plain:get_job(id) }, { idx:get_job(id) }, "cas " .. id) end
        else
          local running = plain:query_jobs({ status = "running" })
          if #running > 0 then
            local j = pick(running)
            local req = { owner = j.claimed_by, ids = { j.job_id }, now = clock, lease_seconds = rand(20) }
            local a, b = both(function(s) return s:extend_leases(req) end)
            assert.are.equal(a, b, "extend " .. j.job_id)
          end
        end
        if step % 25 == 0 or step > 2990 then check_queries(step) end
      end
      -- The run reached every kind of state it means to compare.
      for _, st in ipairs({ "scheduled", "running", "paused", "completed" }) do
        assert.is_true(plain:count_jobs({ status = st }) > 0, st)
      end
      assert.is_true(plain:count_jobs({ ["metadata.tenant_id"] = { ["$in"] = tenants } }) > 50)
      plain:close()
      idx:close()
    end)
  end)
end)
