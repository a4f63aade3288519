-- The lock adapter contract (docs/design.md) as one busted suite, run by
-- every lock adapter's spec:
--
--   require("support.lock_contract")("redis", function() return open_lock() end, opts)
--
-- factory() returns a fresh lock adapter. opts (optional):
--   teardown(lock)  runs after each test, once lock:close() has run.
-- Keys are unique per test, so adapters on a shared server do not see the
-- locks an earlier test left to expire.
--
-- Timing: TTLs of a few tenths of a second and chronis.sleep; lower bounds
-- on waits have a little slack for timer granularity, and the only upper
-- bound is a generous one that catches a wait that ignored its timeout.
local chronis = require "chronis"
local U = require "support.util"

local describe, it, before_each, after_each, assert = U.busted()

local function now_s()
  local t = chronis.time.now()
  if type(t) == "string" then t = chronis.time.parse(t) end
  return t / 1e6
end

local run_id = ("%x%x"):format(os.time(), math.random(0, 0xffffff))
local serial = 0

return function(name, factory, opts)
  opts = opts or {}

  describe(name .. " lock contract", function()
    local lock, K, K2

    before_each(function()
      lock = factory()
      assert(lock, "factory() returned no lock")
      serial = serial + 1
      K = ("chronis-test:%s:%d:k"):format(run_id, serial)
      K2 = K .. "2"
    end)

    after_each(function()
      local l = lock
      lock = nil
      -- The loop is clean: closed adapters' handles are closing, not active.
      U.close_and_check(l, opts.teardown)
    end)

    local function acquire(key, ttl, owner, extra)
      local o = { owner = owner, blocking = false }
      for k, v in pairs(extra or {}) do o[k] = v end
      return lock:acquire(key, ttl, o)
    end

    describe("acquire", function()
      it("takes a free lock", function()
        assert.is_true(acquire(K, 10, "a"))
      end)

      it("refuses a second owner without blocking", function()
        assert.is_true(acquire(K, 10, "a"))
        local t0 = now_s()
        assert.is_false(acquire(K, 10, "b"))
        assert.is_true(now_s() - t0 < 5, "a non-blocking acquire waited")
        assert.is_false(acquire(K, 10, "b", { blocking = false, timeout = 1 }))
        assert.is_false(lock:release(K, "b"))
        assert.is_true(lock:release(K, "a"))
      end)

      it("takes a free lock at once when blocking", function()
        assert.is_true(acquire(K, 10, "a", { blocking = true, timeout = 5 }))
        assert.is_false(acquire(K, 10, "b"))
      end)

      it("lets the owner acquire again, refreshing the TTL", function()
        assert.is_true(acquire(K, 0.5, "a"))
        chronis.sleep(0.3)
        assert.is_true(acquire(K, 0.5, "a"))
        chronis.sleep(0.3)
        -- 0.6 s after the first acquire: held only thanks to the refresh.
        assert.is_false(acquire(K, 10, "b"))
        assert.is_true(lock:release(K, "a"))
      end)

      it("keeps keys independent", function()
        assert.is_true(acquire(K, 10, "a"))
        assert.is_true(acquire(K2, 10, "b"))
        assert.is_false(acquire(K2, 10, "a"))
        assert.is_false(lock:release(K, "b"))
        assert.is_false(lock:release(K2, "a"))
        assert.is_true(lock:release(K, "a"))
        assert.is_false(acquire(K2, 10, "c"))
        assert.is_true(acquire(K, 10, "c"))
      end)

      it("lets another owner in once the TTL has passed", function()
        assert.is_true(acquire(K, 0.2, "a"))
        assert.is_false(acquire(K, 0.2, "b"))
        chronis.sleep(0.3)
        assert.is_true(acquire(K, 10, "b"))
        -- The first owner no longer holds it and cannot release it.
        assert.is_false(lock:release(K, "a"))
        assert.is_false(acquire(K, 10, "a"))
      end)

      it("gives a lock to exactly one of 20 concurrent tasks", function()
        local tasks = {}
        for i = 1, 20 do
          tasks[i] = chronis.spawn(function(n)
            return lock:acquire(K, 10, { owner = "t" .. n, blocking = false })
          end, i)
        end
        local winners = {}
        for i, t in ipairs(tasks) do
          if t:join() then winners[#winners + 1] = i end
        end
        assert.are.equal(1, #winners)
        assert.is_true(lock:release(K, "t" .. winners[1]))
      end)
    end)

    describe("blocking acquire", function()
      it("waits until the holder releases, then takes the lock", function()
        assert.is_true(acquire(K, 30, "a"))
        local t0 = now_s()
        local releaser = chronis.spawn(function()
          chronis.sleep(0.1)
          return lock:release(K, "a")
        end)
        local ok = acquire(K, 30, "b", { blocking = true, timeout = 5 })
        local waited = now_s() - t0
        assert.is_true(ok)
        assert.is_true(releaser:join())
        assert.is_true(waited >= 0.08, ("returned after %.3f s, before the release"):format(waited))
        assert.is_true(waited < 5, ("waited %.3f s"):format(waited))
        assert.is_false(acquire(K, 30, "a"))
        assert.is_true(lock:release(K, "b"))
      end)

      it("gives up with false after its timeout", function()
        assert.is_true(acquire(K, 30, "a"))
        local t0 = now_s()
        local ok = acquire(K, 30, "b", { blocking = true, timeout = 0.3 })
        local waited = now_s() - t0
        assert.is_false(ok)
        assert.is_true(waited >= 0.25, ("gave up after %.3f s, before the 0.3 s timeout"):format(waited))
        assert.is_true(waited < 5, ("waited %.3f s for a 0.3 s timeout"):format(waited))
        assert.is_false(lock:release(K, "b"))
        assert.is_true(lock:release(K, "a"))
      end)

      it("wakes when the holder's TTL ends", function()
        assert.is_true(acquire(K, 0.3, "a"))
        local t0 = now_s()
        local ok = acquire(K, 30, "b", { blocking = true, timeout = 5 })
        local waited = now_s() - t0
        assert.is_true(ok)
        assert.is_true(waited >= 0.2, ("took the lock after %.3f s, before the TTL ended"):format(waited))
        assert.is_true(waited < 5, ("waited %.3f s"):format(waited))
        assert.is_false(acquire(K, 30, "a"))
      end)

      it("hands a released lock to exactly one of two waiters", function()
        assert.is_true(acquire(K, 30, "a"))
        local function waiter(owner)
          return lock:acquire(K, 30, { owner = owner, blocking = true, timeout = 1 })
        end
        local b = chronis.spawn(waiter, "b")
        local c = chronis.spawn(waiter, "c")
        local releaser = chronis.spawn(function()
          chronis.sleep(0.1)
          return lock:release(K, "a")
        end)
        assert.is_true(releaser:join())
        local got_b, got_c = b:join(), c:join()
        assert.are_not.equal(got_b, got_c)
        local winner = got_b and "b" or "c"
        assert.is_false(acquire(K, 30, "a"))
        assert.is_true(lock:release(K, winner))
      end)
    end)

    describe("release", function()
      it("frees the lock only for its owner", function()
        assert.is_true(acquire(K, 30, "a"))
        assert.is_false(lock:release(K, "b"))
        assert.is_false(acquire(K, 30, "b"))
        assert.is_true(lock:release(K, "a"))
        assert.is_false(lock:release(K, "a"))
        assert.is_true(acquire(K, 30, "b"))
      end)

      it("returns false for a lock never taken", function()
        assert.is_false(lock:release(K, "a"))
      end)
    end)

    describe("extend", function()
      it("keeps the owner's lock past its first TTL", function()
        assert.is_true(acquire(K, 0.3, "a"))
        chronis.sleep(0.15)
        assert.is_true(lock:extend(K, 1, "a"))
        chronis.sleep(0.3)
        -- 0.45 s after a 0.3 s acquire: held only thanks to the extension.
        assert.is_false(acquire(K, 30, "b"))
        assert.is_true(lock:release(K, "a"))
      end)

      it("refuses a non-owner and does not extend for them", function()
        assert.is_true(acquire(K, 0.2, "a"))
        assert.is_false(lock:extend(K, 30, "b"))
        chronis.sleep(0.3)
        assert.is_true(acquire(K, 30, "b"))
      end)

      it("returns false for a free or expired lock", function()
        assert.is_false(lock:extend(K, 30, "a"))
        assert.is_true(acquire(K, 0.2, "a"))
        chronis.sleep(0.3)
        assert.is_false(lock:extend(K, 30, "a"))
        assert.is_true(acquire(K, 30, "b"))
      end)
    end)

    describe("reset", function()
      it("removes a held lock whoever holds it", function()
        assert.is_true(acquire(K, 30, "a"))
        assert.is_true(acquire(K2, 30, "a"))
        assert.is_true(lock:reset(K))
        assert.is_true(acquire(K, 30, "b"))
        assert.is_false(lock:release(K, "a"))
        assert.is_false(acquire(K2, 30, "b"))
      end)

      it("returns false for a free lock", function()
        assert.is_false(lock:reset(K))
      end)
    end)

    describe("close", function()
      it("is idempotent", function()
        assert.is_true(acquire(K, 30, "a"))
        lock:close()
        lock:close()
        assert.has_error(function() lock:acquire(K, 30, { owner = "b" }) end)
      end)
    end)
  end)
end
