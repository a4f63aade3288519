-- Unique jobs (docs/engine.md, "Unique jobs"): a create with
-- `unique = true | {key =, period =}` returns the job of the same key
-- created less than `period` ago instead of making a second one.
--
-- It is atomic on every store with nothing but create_job and get_job: the
-- job's id is derived from the key, the period and the window of the clock
-- the create falls in (w = floor(now / period)), so every create of a key
-- in one window competes for one id, and the store's create_job refuses
-- all but one of them (`duplicate`, which every store answers). A job of
-- the window before is looked up first: created less than a period ago, it
-- is the one returned, so the period is counted from the job's creation,
-- not from the window's start.
local core = require "chronis.core"

local engine = core.engine

local M = {}

M.DEFAULT_PERIOD = 60 -- seconds
M.MAX_PERIOD = 315576000 -- ten years of 365.25 days, in seconds
M.MAX_KEY = 1024 -- bytes

local S = 1000000 -- µs in a second

local function invalid(fmt, ...)
  error(core.error("invalid", fmt:format(...)), 0)
end

local function shown(v)
  if type(v) == "string" then return ("'%s'"):format(v) end
  if type(v) == "number" then return tostring(v) end
  return type(v)
end

local spec_keys = { "key", "period" }

-- The members a unique create writes itself.
local derived = { "unique_key", "unique_until" }

--- take(fields) -> the unique option of a create as { key = string|nil,
--- period = µs }, or nil when the create is not unique; removes it from
--- fields. Raises `invalid` naming the field on a bad value, and on the
--- fields it cannot be combined with (job_id, if_exists, and the members it
--- derives).
function M.take(f)
  local u = f.unique
  f.unique = nil
  if u == nil or u == false then return nil end
  if u ~= true and type(u) ~= "table" then
    invalid("invalid field 'unique': expected true or a table {key =, period =}, got %s", shown(u))
  end
  local key, period = nil, M.DEFAULT_PERIOD
  if type(u) == "table" then
    local unknown = {}
    for k in pairs(u) do
      if k ~= "key" and k ~= "period" then unknown[#unknown + 1] = tostring(k) end
    end
    if #unknown > 0 then
      table.sort(unknown)
      invalid("invalid field 'unique': %s", core.unknown_keys("key", unknown, spec_keys))
    end
    key = u.key
    if key ~= nil and (type(key) ~= "string" or key == "" or #key > M.MAX_KEY) then
      invalid("invalid field 'unique.key': expected a string of 1-%d bytes, got %s", M.MAX_KEY,
        type(key) == "string" and (#key == 0 and "''" or #key .. " bytes") or type(key))
    end
    if u.period ~= nil then
      period = u.period
      if type(period) ~= "number" or period ~= period or period <= 0 or period > M.MAX_PERIOD then
        invalid("invalid field 'unique.period': expected a number of seconds above 0 and at most %d, "
          .. "got %s", M.MAX_PERIOD, shown(period))
      end
    end
  end
  local us = math.floor(period * S)
  if us < 1 then
    invalid("invalid field 'unique.period': %s seconds is less than one microsecond", shown(period))
  end
  -- The id is derived from the key: one given too would be another job's.
  if f.job_id ~= nil then
    invalid("invalid field 'unique': cannot be combined with job_id (a unique job's id is derived from "
      .. "its key; for a job of your own id, use if_exists = \"skip\")")
  end
  if f.if_exists ~= nil then
    invalid("invalid field 'unique': cannot be combined with if_exists (a unique create already "
      .. "returns the existing job)")
  end
  for _, k in ipairs(derived) do
    if f[k] ~= nil then
      invalid("invalid field '%s': set by chronis on a unique job (from 'unique')", k)
    end
  end
  return { key = key, period = us }
end

-- The default key: the handler and its arguments, as canonical JSON (keys
-- sorted, an integral float written as its integer), so equal arguments
-- give equal keys whatever the order a table was built in.
local function default_key(f)
  if type(f.func_name) ~= "string" or f.func_name == "" then
    invalid("invalid field 'func_name': %s (a unique job's default key is its handler and "
      .. "arguments)", f.func_name == nil and "missing" or "expected a non-empty string")
  end
  return core.json.encode({ f.func_name, f.args or {}, f.kwargs or {} })
end

-- The id of the key's job in window w: 128 bits of SHA-256 over the key
-- and the period (creates of one key with another period are other jobs:
-- their windows differ), then the window.
local function id_of(base, w)
  return ("unique-%s-%d"):format(base, w)
end

local function live(job, key, now)
  if not job or job.unique_key ~= key or type(job.unique_until) ~= "string" then return false end
  local ok, until_us = pcall(core.time.parse, job.unique_until)
  return ok and now < until_us
end

--- create(store, fields, spec, now) -> job, existed: the job of the key
--- created less than a period ago (existed = true), or the one this call
--- created (existed = false). fields are a create's, trigger keys already
--- in trigger_args; spec is take()'s.
function M.create(store, f, spec, now)
  local key = spec.key or default_key(f)
  local period = spec.period
  local base = core.crypto.sha256_hex(key .. "\n" .. period):sub(1, 32)
  local w = now // period
  f.job_id = id_of(base, w)
  f.unique_key = key
  f.unique_until = core.time.format(now + period)
  -- Validated before any lookup: a create with a bad field is refused even
  -- when its key has a job.
  local job = engine.prepare_job(f, now)
  -- A job of the window before is within the period when it was created
  -- less than a period ago (its unique_until is still ahead).
  local prev = store:get_job(id_of(base, w - 1))
  if live(prev, key, now) then return prev, true end
  -- The job of this window, or the one another create of it made first.
  -- A job deleted between the two calls (it finished) leaves the id free:
  -- the create is tried again.
  for _ = 1, 3 do
    local ok, stored = pcall(store.create_job, store, job)
    if ok then return stored, false end
    if type(stored) ~= "table" or stored.code ~= "duplicate" then error(stored, 0) end
    local cur = store:get_job(job.job_id)
    if cur then
      if cur.unique_key ~= key then
        error(core.error("duplicate", ("job '%s' exists and is not the unique job of this key "
          .. "(its unique_key differs)"):format(job.job_id)), 0)
      end
      return cur, true
    end
  end
  error(core.error("conflict", ("cannot create unique job '%s': it keeps being created and "
    .. "deleted"):format(job.job_id)), 0)
end

return M
