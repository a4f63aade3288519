-- The fault-injection suite, short: for each store, two chaos runs
-- (spec/support/chaos.lua) of a few seconds each, one with a fixed seed
-- and one with a seed drawn now and printed, so that a failure can be
-- replayed with `make chaos CHAOS_STORES=<store> CHAOS_SEED=<seed>`. Each
-- fails with the checker's findings (spec/support/chaos_check.lua): lost
-- runs, repeats the lease rules do not explain, stuck jobs, crashes, hangs,
-- memory growth. `make chaos` runs the long version.
local chaos = require "support.chaos"

local SECONDS = 8
local FIXED_SEED = 20
local random_seed = tonumber(os.getenv("CHAOS_SEED") or "") or (os.time() % 100000)
io.stdout:write(("chaos_spec: fixed seed %d, random seed %d (CHAOS_SEED=%d replays it)\n"):format(FIXED_SEED,
  random_seed, random_seed))

local function run(store)
  local failures = {}
  for _, seed in ipairs({ FIXED_SEED, random_seed }) do
    local report = chaos.run{ store = store, seed = seed, seconds = SECONDS }
    io.stdout:write(report.summary, "\n")
    if not report.ok then
      failures[#failures + 1] = ("%s\n  %s\n  logs: %s\n  replay: make chaos CHAOS_STORES=%s CHAOS_SEED=%d "
        .. "CHAOS_SECONDS=%d"):format(report.summary, table.concat(report.findings, "\n  "), report.dir, store,
        seed, SECONDS)
    end
  end
  assert(#failures == 0, table.concat(failures, "\n"))
end

describe("under injected faults, no run is lost, repeated without cause or stuck", function()
  for _, store in ipairs({ "sqlite", "postgres", "redis", "file" }) do
    it("on " .. store, function() run(store) end)
  end
end)

-- The checker itself, on logs written by hand: it must see what it is
-- there to see.
describe("the chaos checker", function()
  local U = require "support.util"
  local check = require("support.chaos_check").check
  local T = require("chronis").time
  local S = 1000000
  local t0 = T.parse("2026-01-01T00:00:00Z")
  local dir

  before_each(function() dir = U.tmpdir("chronis-chaos-check") end)
  after_each(function() U.remove_tree(dir) end)

  -- A worker whose log holds `lines`, each {"start"|"end", job, slot (µs
  -- or nil), at (µs)}.
  local function worker(id, lines, extra)
    local out = { "pid 1" }
    for _, l in ipairs(lines) do
      out[#out + 1] = ("%s %s %s 1 1 %d"):format(l[1], l[2], l[3] and T.format(l[3]) or "-", l[4])
    end
    local w = { id = id, log = dir .. "/" .. id .. ".log", rc = 0 }
    for k, v in pairs(extra or {}) do w[k] = v end
    U.write(w.log, table.concat(out, "\n") .. "\n")
    return w
  end

  local function data(workers, faults, workload, final)
    return { lease = 3, workers = workers, faults = faults or {}, healed_us = t0 + 20 * S,
      workload = workload or { a = { kind = "once", due = t0 } }, final_jobs = final or {} }
  end

  it("passes one completed run of a one-shot", function()
    local r = check(data({ worker("w1", { { "start", "a", nil, t0 }, { "end", "a", nil, t0 + S } }) }))
    assert.are.same({}, r.findings)
    assert.are.equal(1, r.stats.runs)
  end)

  it("finds a lost one-shot, and one still stored", function()
    local r = check(data({ worker("w1", {}) }, nil, nil, { { job_id = "a", status = "running" } }))
    assert.matches("^lost: one%-shot a ", r.findings[1])
    assert.matches("^stuck: one%-shot a is still stored: status running", r.findings[2])
  end)

  it("finds a repeat that no fault explains, and explains one after a kill or a run without an end", function()
    local runs = { { "start", "a", nil, t0 }, { "end", "a", nil, t0 + S } }
    local again = { { "start", "a", nil, t0 + 10 * S }, { "end", "a", nil, t0 + 11 * S } }
    local r = check(data({ worker("w1", runs), worker("w2", again) }))
    assert.are.equal(1, r.stats.repeats_unexplained)
    assert.matches("^duplicate: a@%- ran again", r.findings[1])
    r = check(data({ worker("w1", runs), worker("w2", again) },
      { { kind = "worker_kill", target = "w1", b = t0 + 2 * S, e = t0 + 2 * S } }))
    assert.are.same({}, r.findings)
    assert.are.same({ ["worker fault"] = 1 }, r.stats.explained_by)
    -- A stop shorter than the lease explains nothing.
    r = check(data({ worker("w1", runs), worker("w2", again) },
      { { kind = "worker_stop_short", target = "w1", b = t0, e = t0 + S // 2, explains = false } }))
    assert.are.equal(1, r.stats.repeats_unexplained)
    r = check(data({ worker("w1", { runs[1] }), worker("w2", again) }))
    assert.are.same({}, r.findings)
    assert.are.same({ ["no end"] = 1 }, r.stats.explained_by)
  end)

  it("finds a missed interval slot, and allows the gap after a late run_once", function()
    local job = { kind = "interval", interval = 5, start = t0, run_all = true, threshold = 3600 }
    local final = { { job_id = "i", status = "scheduled", next_run_time = "x" } }
    local lines = {}
    for k = 0, 5 do
      if k ~= 2 then
        lines[#lines + 1] = { "start", "i", t0 + k * 5 * S, t0 + k * 5 * S }
        lines[#lines + 1] = { "end", "i", t0 + k * 5 * S, t0 + k * 5 * S + S }
      end
    end
    local r = check(data({ worker("w1", lines) }, nil, { i = job }, final))
    assert.are.equal(1, #r.findings)
    assert.matches("^lost: i slot 2026%-01%-01T00:00:10Z never ran %(if_missed=run_all%)", r.findings[1])
    -- run_once: slot 5 s ran 8 s late, so that run stood for slot 10 s too
    -- and the engine moved on to the first slot after its start: 15 s.
    -- Late is enough, missed (past the threshold) or not.
    for _, threshold in ipairs({ 4, 60 }) do
      job = { kind = "interval", interval = 5, start = t0, run_all = false, threshold = threshold }
      lines[3] = { "start", "i", t0 + 5 * S, t0 + 13 * S }
      lines[4] = { "end", "i", t0 + 5 * S, t0 + 14 * S }
      r = check(data({ worker("w1", lines) }, nil, { i = job }, final))
      assert.are.same({}, r.findings)
    end
    -- Started before slot 10 s: that slot is lost.
    lines[3] = { "start", "i", t0 + 5 * S, t0 + 9 * S }
    lines[4] = { "end", "i", t0 + 5 * S, t0 + 10 * S }
    r = check(data({ worker("w1", lines) }, nil, { i = job }, final))
    assert.are.equal(1, #r.findings)
    assert.matches("^lost: i slot 2026%-01%-01T00:00:10Z never ran %(if_missed=run_once%)", r.findings[1])
    -- overlap = "queue": the run for slot 5 s went on until 16 s, past
    -- slots 10 s and 15 s; one run for 15 s, the latest, stood for both.
    lines[3] = { "start", "i", t0 + 5 * S, t0 + 5 * S }
    lines[4] = { "end", "i", t0 + 5 * S, t0 + 16 * S }
    r = check(data({ worker("w1", lines) }, nil, { i = job }, final))
    assert.are.same({}, r.findings)
  end)

  it("finds crashes, hangs and memory growth", function()
    local rss = {}
    for k = 1, 20 do rss[k] = k <= 10 and 10000 or 60000 end
    local r = check(data({
      worker("w1", { { "start", "a", nil, t0 }, { "end", "a", nil, t0 + S } }, { rc = 1, stderr = "boom" }),
      worker("w2", {}, { hang = true }),
      worker("w3", {}, { rss = rss }),
      worker("w4", {}, { rc = 137, killed = true }),
    }))
    assert.are.equal(3, #r.findings)
    assert.matches("^crash: worker w1 .*status 1.*boom", r.findings[1])
    assert.matches("^hang: worker w2", r.findings[2])
    assert.matches("^memory: worker w3 grew from 10000 kB to 60000 kB", r.findings[3])
  end)
end)
