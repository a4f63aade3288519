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

local describe, it, before_each, _, assert = U.busted()

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

    -- The loop is clean after each test: closed adapters' handles are
    -- closing, not active.
    U.fresh_each("lock", factory, opts.teardown, function(l) lock = l end)

    before_each(function()
      serial = serial + 1
      K = ("chronis-test:%s:%d:k"):format(run_id, serial)
      K2 = K .. "2"
    end)

    local function acquire(key, ttl, owner, extra)
      local o = { owner = owner, blocking = false }
      for k, v in pairs(extra or {}) do o[k] = v end
      return lock:acquire(key, ttl, o)
    end

    -- Owner "a" takes K for ttl seconds, renews it after `after` seconds
    -- with renew(), and must still hold it 0.3 s later, past the first TTL.
    local function check_renewal(ttl, after, renew)
      assert.is_true(acquire(K, ttl, "a"))
      chronis.sleep(after)
      assert.is_true(renew())
      chronis.sleep(0.3)
      assert.is_false(acquire(K, 10, "b"))
      assert.is_true(lock:release(K, "a"))
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
        -- 0.6 s after the first acquire: held only thanks to the refresh.
        check_renewal(0.5, 0.3, function() return acquire(K, 0.5, "a") end)
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

    -- A blocking acquire of K by owner, which must wait at least min_wait
    -- seconds (else fails with early, formatted with the wait) and must
    -- not outlast the generous bound. Returns its result.
    local function wait_acquire(owner, timeout, min_wait, early)
      local t0 = now_s()
      local ok = acquire(K, 30, owner, { blocking = true, timeout = timeout })
      local waited = now_s() - t0
      assert.is_true(waited >= min_wait, early:format(waited))
      assert.is_true(waited < 5, ("waited %.3f s with a %g s timeout"):format(waited, timeout))
      return ok
    end

    describe("blocking acquire", function()
      it("waits until the holder releases, then takes the lock", function()
        assert.is_true(acquire(K, 30, "a"))
        local releaser = chronis.spawn(function()
          chronis.sleep(0.1)
          return lock:release(K, "a")
        end)
        assert.is_true(wait_acquire("b", 5, 0.08, "returned after %.3f s, before the release"))
        assert.is_true(releaser:join())
        assert.is_false(acquire(K, 30, "a"))
        assert.is_true(lock:release(K, "b"))
      end)

      it("gives up with false after its timeout", function()
        assert.is_true(acquire(K, 30, "a"))
        assert.is_false(wait_acquire("b", 0.3, 0.25, "gave up after %.3f s, before the 0.3 s timeout"))
        assert.is_false(lock:release(K, "b"))
        assert.is_true(lock:release(K, "a"))
      end)

      it("wakes when the holder's TTL ends", function()
        assert.is_true(acquire(K, 0.3, "a"))
        assert.is_true(wait_acquire("b", 5, 0.2, "took the lock after %.3f s, before the TTL ended"))
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
        -- 0.45 s after a 0.3 s acquire: held only thanks to the extension.
        check_renewal(0.3, 0.15, function() return lock:extend(K, 1, "a") end)
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
