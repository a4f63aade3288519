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
