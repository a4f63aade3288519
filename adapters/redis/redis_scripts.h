/* redis_scripts.h - the server-side Lua scripts of the Redis store
 * (redis.c). Every state change is one script, run atomically by Redis;
 * KEYS[1] is the hash tag "{prefix}" and every key a script touches starts
 * with it, so all of them live in one cluster slot. See docs/redis.md for
 * the key layout. Scripts run in Redis' Lua 5.1, where numbers are
 * doubles: times stay decimal strings of microseconds (exact below 2^53,
 * that is until the year 2255) and computed ones are formatted with %d.
 * A script validates everything before its first write: Redis does not
 * roll back the writes of a script that fails half way. */
#ifndef CHR_REDIS_SCRIPTS_H
#define CHR_REDIS_SCRIPTS_H

/* Shared by every script: argument reading, updated_at stamps, batched
 * index commands, the index moves of a state change, and the metadata
 * indexes (with a scanner for canonical JSON text). */
#define CHR_REDIS_PRELUDE \
    "local P = KEYS[1]\n" \
    "local Q, IDX = {}, nil\n" \
    "local ai = 0\n" \
    "local function arg() ai = ai + 1 return ARGV[ai] end\n" \
    "local function args(n)\n" \
    "  local t = {}\n" \
    "  for i = 1, n do t[i] = ARGV[ai + i] end\n" \
    "  ai = ai + n\n" \
    "  return t\n" \
    "end\n" \
    "local JOB, JOBS, LEASE = P .. ':job:', P .. ':jobs', P .. ':lease'\n" \
    "local function jkey(id) return JOB .. id end\n" \
    "local function cached(fmtk)\n" \
    "  return setmetatable({}, { __index = function(t, k)\n" \
    "    local v = P .. fmtk .. k\n" \
    "    t[k] = v\n" \
    "    return v\n" \
    "  end })\n" \
    "end\n" \
    "local STK, DUEK = cached(':st:'), cached(':due:')\n" \
    "local function fmt(n) return string.format('%d', n) end\n" \
    "-- A lease granted by a request that waited (queued, or the server was\n" \
    "-- paused) more than a second since it was issued starts now, on this\n" \
    "-- server's clock: the wait is added to lease_until.\n" \
    "local function waited(lease, issued)\n" \
    "  local t = redis.call('TIME')\n" \
    "  local d = tonumber(t[1]) * 1000000 + tonumber(t[2]) - tonumber(issued)\n" \
    "  if d > 1000000 then return fmt(tonumber(lease) + d) end\n" \
    "  return lease\n" \
    "end\n" \
    "-- updated_at: the server clock in µs, strictly increasing per prefix; n\n" \
    "-- stamps are reserved. Called only once a script is sure to write.\n" \
    "local function stamps(n)\n" \
    "  local t = redis.call('TIME')\n" \
    "  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n" \
    "  local last = tonumber(redis.call('GET', P .. ':clock') or '0')\n" \
    "  if now <= last then now = last + 1 end\n" \
    "  redis.call('SET', P .. ':clock', fmt(now + n - 1))\n" \
    "  return now\n" \
    "end\n" \
    "-- Index commands are batched per command and key, sent by qflush.\n" \
    "local function q(cmd, key, a, b)\n" \
    "  local byk = Q[cmd]\n" \
    "  if not byk then byk = {} Q[cmd] = byk end\n" \
    "  local l = byk[key]\n" \
    "  if not l then l = { cmd, key } byk[key] = l end\n" \
    "  l[#l + 1] = a\n" \
    "  if b then l[#l + 1] = b end\n" \
    "  if #l > 2000 then redis.call(unpack(l)) byk[key] = nil end\n" \
    "end\n" \
    "local function qflush()\n" \
    "  for _, byk in pairs(Q) do\n" \
    "    for _, l in pairs(byk) do redis.call(unpack(l)) end\n" \
    "  end\n" \
    "  Q = {}\n" \
    "end\n" \
    "-- The metadata paths indexed (index_metadata, building or ready), read\n" \
    "-- once per call, and the fields state reads: SF (x:queue: the job's\n" \
    "-- queue, for the per-queue due sets), then SFM with the metadata text too.\n" \
    "local SF, SFM\n" \
    "local function idx()\n" \
    "  if not IDX then IDX = redis.call('HKEYS', P .. ':indexes') end\n" \
    "  if not SF then\n" \
    "    SF = { 'status', 'next_run_time', 'priority', 'lease_until', 'claimed_by', 'x:queue' }\n" \
    "    SFM = { 'status', 'next_run_time', 'priority', 'lease_until', 'claimed_by', 'x:queue',\n" \
    "      'x:metadata' }\n" \
    "    for i, p in ipairs(IDX) do\n" \
    "      SF[6 + i] = 'i:' .. p\n" \
    "      SFM[7 + i] = 'i:' .. p\n" \
    "    end\n" \
    "  end\n" \
    "  return IDX\n" \
    "end\n" \
    "-- A job's indexed state: s status, t next_run_time, p priority, l\n" \
    "-- lease_until, c claimed_by, q its queue's JSON text (false when absent),\n" \
    "-- iv the values it is indexed under (by IDX), and with meta m its\n" \
    "-- metadata text.\n" \
    "local function state(k, meta)\n" \
    "  idx()\n" \
    "  local r = redis.call('HMGET', k, unpack(meta and SFM or SF))\n" \
    "  if not r[1] then return nil end\n" \
    "  local iv, at = {}, meta and 7 or 6\n" \
    "  for i = 1, #IDX do iv[i] = r[at + i] end\n" \
    "  return { s = r[1], t = r[2], p = r[3], l = r[4], c = r[5], q = r[6], m = meta and r[7], iv = iv }\n" \
    "end\n" \
    "local NAMES = { status = 's', next_run_time = 't', priority = 'p', lease_until = 'l', claimed_by = 'c',\n" \
    "  ['x:queue'] = 'q' }\n" \
    "local function apply(o, sets, dels)\n" \
    "  local n = { s = o.s, t = o.t, p = o.p, l = o.l, c = o.c, q = o.q, iv = o.iv }\n" \
    "  for i = 1, #sets, 2 do\n" \
    "    local f = NAMES[sets[i]]\n" \
    "    if f then n[f] = sets[i + 1] end\n" \
    "  end\n" \
    "  for i = 1, #dels do\n" \
    "    local f = NAMES[dels[i]]\n" \
    "    if f then n[f] = false end\n" \
    "  end\n" \
    "  return n\n" \
    "end\n" \
    "-- Byte order of two ids (Lua compares strings by locale).\n" \
    "local function before(a, b)\n" \
    "  for i = 1, math.min(#a, #b) do\n" \
    "    local x, y = string.byte(a, i), string.byte(b, i)\n" \
    "    if x ~= y then return x < y end\n" \
    "  end\n" \
    "  return #a < #b\n" \
    "end\n" \
    "local function sc(t) return t or 'inf' end\n" \
    "-- Named queues (docs/queues.md): a job's queue is its member `queue`, a\n" \
    "-- JSON string (names need no escapes), 'default' without one. Its\n" \
    "-- scheduled jobs with a time are in qdue:<queue>:<priority> (score: the\n" \
    "-- time), which claims with queues read. Every write keeps it but the\n" \
    "-- claims without queues, which leave their jobs in it to keep their cost\n" \
    "-- as it was: a claim with queues drops such stale entries as it meets\n" \
    "-- them, and a job's next write as scheduled puts its entry right.\n" \
    "local function qname(t)\n" \
    "  if t and #t >= 2 and string.byte(t, 1) == 34 and string.byte(t, -1) == 34 then return string.sub(t, 2, -2) end\n" \
    "  return 'default'\n" \
    "end\n" \
    "local function qdue_key(name, p) return P .. ':qdue:' .. name .. ':' .. p end\n" \
    "local function due_key(p) return DUEK[p] end\n" \
    "-- Where a job of state st is indexed, besides jobs: scheduled jobs with a\n" \
    "-- time in due:<priority> (score: the time), running jobs with a lease in\n" \
    "-- lease (score: lease_until), every other job in the set of its status.\n" \
    "local function place(st)\n" \
    "  if st.s == 'scheduled' and st.t then return 'z', DUEK[st.p or '5'], st.t end\n" \
    "  if st.s == 'running' and st.l then return 'z', LEASE, st.l end\n" \
    "  return 's', STK[st.s], nil\n" \
    "end\n" \
    "-- Per indexed value (index_metadata), what a scope needs: scheduled jobs\n" \
    "-- with a time in tdue:<#path>:<path>:<priority>:<value> (score: the time),\n" \
    "-- running jobs with a lease in tlease:<#path>:<path>:<value> (score:\n" \
    "-- lease_until), no other job.\n" \
    "local function tdue_key(path, p, v) return P .. ':tdue:' .. #path .. ':' .. path .. ':' .. p .. ':' .. v end\n" \
    "local function tlease_key(path, v) return P .. ':tlease:' .. #path .. ':' .. path .. ':' .. v end\n" \
    "local function tplace(st, path, v)\n" \
    "  if st.s == 'scheduled' and st.t then return tdue_key(path, st.p or '5', v), st.t end\n" \
    "  if st.s == 'running' and st.l then return tlease_key(path, v), st.l end\n" \
    "  return nil, nil\n" \
    "end\n" \
    "-- Moves job id from the indexes of state o to those of state n (nil: no job),\n" \
    "-- the per-value sets included (o.iv, n.iv: the values, by IDX).\n" \
    "local function reindex(id, o, n)\n" \
    "  if not n then\n" \
    "    q('ZREM', JOBS, id)\n" \
    "  elseif not o or o.t ~= n.t then\n" \
    "    q('ZADD', JOBS, sc(n.t), id)\n" \
    "  end\n" \
    "  local ok, okey, oscore, nk, nkey, nscore\n" \
    "  if o then ok, okey, oscore = place(o) end\n" \
    "  if n then nk, nkey, nscore = place(n) end\n" \
    "  if okey and okey ~= nkey then q(ok == 's' and 'SREM' or 'ZREM', okey, id) end\n" \
    "  if nkey and (nkey ~= okey or nscore ~= oscore) then\n" \
    "    if nk == 's' then\n" \
    "      q('SADD', nkey, id)\n" \
    "    else\n" \
    "      q('ZADD', nkey, nscore, id)\n" \
    "      local pn = n.s == 'scheduled' and tonumber(n.p or '5')\n" \
    "      if pn and (pn > 10 or pn < 0) then redis.call('ZADD', P .. ':prios', n.p, n.p) end\n" \
    "    end\n" \
    "  end\n" \
    "  for i, path in ipairs(IDX or {}) do\n" \
    "    local tok, tos, tnk, tns\n" \
    "    if o and o.iv and o.iv[i] then tok, tos = tplace(o, path, o.iv[i]) end\n" \
    "    if n and n.iv and n.iv[i] then tnk, tns = tplace(n, path, n.iv[i]) end\n" \
    "    if tok and tok ~= tnk then q('ZREM', tok, id) end\n" \
    "    if tnk and (tnk ~= tok or tns ~= tos) then q('ZADD', tnk, tns, id) end\n" \
    "  end\n" \
    "  local oq = o and qdue_key(qname(o.q), o.p or '5')\n" \
    "  local nq = n and n.s == 'scheduled' and n.t and qdue_key(qname(n.q), n.p or '5')\n" \
    "  -- A running job's entry may be left by a claim without queues: its\n" \
    "  -- lease extensions leave it too, its end as scheduled or not drops it.\n" \
    "  if oq and oq ~= nq and not (o.s == 'running' and n and n.s == 'running') then q('ZREM', oq, id) end\n" \
    "  if nq and (nq ~= oq or o.s ~= 'scheduled' or o.t ~= n.t) then q('ZADD', nq, n.t, id) end\n" \
    "end\n" \
    "-- A running job whose lease expired goes back to scheduled (o: its\n" \
    "-- state, st: the time stamp of the recovery).\n" \
    "local function recover_job(id, o, st)\n" \
    "  local k = jkey(id)\n" \
    "  redis.call('HSET', k, 'status', 'scheduled', 'updated_at', st)\n" \
    "  redis.call('HDEL', k, 'claimed_by', 'lease_until')\n" \
    "  -- the run that was cut short counts (engine.c, lease_exhausted)\n" \
    "  redis.call('HINCRBY', k, 'retry_count', 1)\n" \
    "  redis.call('HINCRBY', k, 'attempt', 1)\n" \
    "  reindex(id, o, { s = 'scheduled', t = o.t, p = o.p, l = false, c = false, q = o.q, iv = o.iv })\n" \
    "end\n" \
    "-- The value at a dotted path inside canonical JSON object text (no white\n" \
    "-- space, as the C side writes it), as text; false when absent.\n" \
    "local function skip(s, i)\n" \
    "  local c = string.byte(s, i)\n" \
    "  if c == 34 then\n" \
    "    i = i + 1\n" \
    "    while true do\n" \
    "      local b = string.byte(s, i)\n" \
    "      if b == 92 then i = i + 2\n" \
    "      elseif b == 34 then return i + 1\n" \
    "      elseif not b then error('bad JSON')\n" \
    "      else i = i + 1 end\n" \
    "    end\n" \
    "  elseif c == 123 or c == 91 then\n" \
    "    local depth = 0\n" \
    "    while true do\n" \
    "      local b = string.byte(s, i)\n" \
    "      if not b then error('bad JSON') end\n" \
    "      if b == 34 then\n" \
    "        i = skip(s, i)\n" \
    "      else\n" \
    "        if b == 123 or b == 91 then depth = depth + 1\n" \
    "        elseif b == 125 or b == 93 then depth = depth - 1 end\n" \
    "        i = i + 1\n" \
    "        if depth == 0 then return i end\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  while true do\n" \
    "    local b = string.byte(s, i)\n" \
    "    if not b or b == 44 or b == 125 or b == 93 then return i end\n" \
    "    i = i + 1\n" \
    "  end\n" \
    "end\n" \
    "-- The text of member seg (an unescaped key) of object text s, or false.\n" \
    "local function json_member(s, seg)\n" \
    "  if string.byte(s, 1) ~= 123 then return false end\n" \
    "  local i = 2\n" \
    "  while string.byte(s, i) == 34 do\n" \
    "    local ke = skip(s, i)\n" \
    "    local ve = skip(s, ke + 1)\n" \
    "    local key = string.sub(s, i + 1, ke - 2)\n" \
    "    -- an escaped key (a quote, backslash or control character in it)\n" \
    "    if string.find(key, '\\\\', 1, true) then key = cjson.decode(string.sub(s, i, ke - 1)) end\n" \
    "    if key == seg then return string.sub(s, ke + 1, ve - 1) end\n" \
    "    i = ve\n" \
    "    if string.byte(s, i) == 44 then i = i + 1 end\n" \
    "  end\n" \
    "  return false\n" \
    "end\n" \
    "local function json_at(s, path)\n" \
    "  local pos = 1\n" \
    "  while pos <= #path do\n" \
    "    local dot = string.find(path, '.', pos, true)\n" \
    "    local seg = string.sub(path, pos, (dot or #path + 1) - 1)\n" \
    "    pos = dot and dot + 1 or #path + 1\n" \
    "    s = json_member(s, seg)\n" \
    "    if not s then return false end\n" \
    "  end\n" \
    "  return s\n" \
    "end\n" \
    "local function idx_key(path, v) return P .. ':idx:' .. #path .. ':' .. path .. ':' .. v end\n" \
    "-- Metadata indexes (index_metadata): the job's i:<path> fields hold the\n" \
    "-- values it is indexed under. meta: the new metadata text, false for none.\n" \
    "-- Returns the new values, by IDX.\n" \
    "local function meta_index(id, k, meta, deleting)\n" \
    "  idx()\n" \
    "  local out = {}\n" \
    "  if #IDX == 0 then return out end\n" \
    "  local f = {}\n" \
    "  for i, p in ipairs(IDX) do f[i] = 'i:' .. p end\n" \
    "  local old = redis.call('HMGET', k, unpack(f))\n" \
    "  for i, p in ipairs(IDX) do\n" \
    "    local nv = false\n" \
    "    if meta then\n" \
    "      local ok, v = pcall(json_at, meta, p)\n" \
    "      if ok and v then nv = v end\n" \
    "    end\n" \
    "    out[i] = nv\n" \
    "    if old[i] ~= nv then\n" \
    "      if old[i] then q('SREM', idx_key(p, old[i]), id) end\n" \
    "      if nv then q('SADD', idx_key(p, nv), id) end\n" \
    "      if not deleting then\n" \
    "        if nv then redis.call('HSET', k, f[i], nv) else redis.call('HDEL', k, f[i]) end\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  return out\n" \
    "end\n" \
    "local function meta_of(sets, dels)\n" \
    "  for i = 1, #sets, 2 do\n" \
    "    if sets[i] == 'x:metadata' then return true, sets[i + 1] end\n" \
    "  end\n" \
    "  for i = 1, #dels do\n" \
    "    if dels[i] == 'x:metadata' then return true, false end\n" \
    "  end\n" \
    "  return false, false\n" \
    "end\n"

/* Scoped claims, recoveries and next due times: the scope's conditions
 * and their matching, and the choice between per-value sets and a walk. */
#define CHR_REDIS_SCOPE \
    "-- A scope (the filters of a scoped claim, recovery or next due time):\n" \
    "-- ncond, then per condition: operator (eq ne in absent present), path\n" \
    "-- as written, nkeys, its keys unescaped..., nvalues, canonical JSON\n" \
    "-- texts.... Matched on the metadata text as chr_meta_filter_match does:\n" \
    "-- null is absent, values compare as canonical text.\n" \
    "local function read_scope()\n" \
    "  local conds = {}\n" \
    "  for c = 1, tonumber(arg()) do\n" \
    "    local op, path = arg(), arg()\n" \
    "    local keys = args(tonumber(arg()))\n" \
    "    local set, vals = {}, {}\n" \
    "    for _, v in ipairs(args(tonumber(arg()))) do\n" \
    "      if not set[v] then vals[#vals + 1] = v end\n" \
    "      set[v] = true\n" \
    "    end\n" \
    "    conds[c] = { op = op, path = path, keys = keys, vals = vals, set = set }\n" \
    "  end\n" \
    "  return conds\n" \
    "end\n" \
    "local function json_keys(s, keys)\n" \
    "  for _, seg in ipairs(keys) do\n" \
    "    s = json_member(s, seg)\n" \
    "    if not s then return false end\n" \
    "  end\n" \
    "  if s == 'null' then return false end\n" \
    "  return s\n" \
    "end\n" \
    "local function matches(conds, meta)\n" \
    "  for _, c in ipairs(conds) do\n" \
    "    local v = false\n" \
    "    if meta then\n" \
    "      local ok, x = pcall(json_keys, meta, c.keys)\n" \
    "      v = ok and x\n" \
    "    end\n" \
    "    if c.op == 'absent' then\n" \
    "      if v then return false end\n" \
    "    elseif c.op == 'present' then\n" \
    "      if not v then return false end\n" \
    "    else\n" \
    "      local eq = v and c.set[v] or false\n" \
    "      if c.op == 'ne' then\n" \
    "        if eq then return false end\n" \
    "      elseif not eq then\n" \
    "        return false\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  return true\n" \
    "end\n" \
    "-- The condition whose per-value sets serve the scope: an equality, or an\n" \
    "-- $in of a few values, on a path whose sets are ready; nil: none (walk).\n" \
    "local function driver(conds)\n" \
    "  local best\n" \
    "  for _, c in ipairs(conds) do\n" \
    "    if (c.op == 'eq' or (c.op == 'in' and #c.vals <= 16)) and (not best or #c.vals < #best.vals) and\n" \
    "        redis.call('HGET', P .. ':scoped', c.path) == 'ready' then\n" \
    "      best = c\n" \
    "    end\n" \
    "  end\n" \
    "  return best\n" \
    "end\n" \
    "-- The state of job id (with its metadata) when it is a job in the scope\n" \
    "-- and s is its status, else nil, and then true when its entry in a set of\n" \
    "-- status s is stale (no such job, or not of that status any more).\n" \
    "local function in_scope(conds, id, s)\n" \
    "  local ok, o = pcall(state, jkey(id), true)\n" \
    "  if not ok then return nil, false end -- a key that is no job hash\n" \
    "  if not o or o.s ~= s then return nil, true end\n" \
    "  if not matches(conds, o.m or false) then return nil, false end\n" \
    "  return o, false\n" \
    "end\n" \
    "-- Scheduled levels, highest priority first (as claim_due_jobs takes them).\n" \
    "local function levels_desc()\n" \
    "  local levels = redis.call('ZREVRANGEBYSCORE', P .. ':prios', '+inf', '(10')\n" \
    "  for p = 10, 0, -1 do levels[#levels + 1] = tostring(p) end\n" \
    "  for _, p in ipairs(redis.call('ZREVRANGEBYSCORE', P .. ':prios', '(0', '-inf')) do\n" \
    "    levels[#levels + 1] = p\n" \
    "  end\n" \
    "  return levels\n" \
    "end\n" \

/* Run history: its keys and the order of runs, for the scripts that
 * write or read runs (the key layout is described in the first lines). */
#define CHR_REDIS_RUNKEYS \
    "-- Run history (docs/redis.md). A run's key is its start as 18 digits\n" \
    "-- (seconds + 10^11, then microseconds) followed by its run id: keys sort\n" \
    "-- as runs do. The hash P:rj maps a job id to its index: \"<key>\\0<JSON\n" \
    "-- text>\" while the job has one run (kept whole: the first run of a job\n" \
    "-- costs one field), else the keys of its runs, oldest first, joined by\n" \
    "-- \"\\0\", their texts in the hash P:run (key -> text). The set P:rt:<bucket>\n" \
    "-- holds the jobs with a run that started in that 10 ms bucket (the first\n" \
    "-- 14 digits of a key), and the sorted set P:rtb every bucket that has a\n" \
    "-- set, scored by its number: newest first for queries across jobs,\n" \
    "-- oldest first for pruning by age.\n" \
    "local RUN, RJ, RTB = P .. ':run', P .. ':rj', P .. ':rtb'\n" \
    "local find, sub, byte = string.find, string.sub, string.byte\n" \
    "local function rt_key(b) return P .. ':rt:' .. b end\n" \
    "-- The starts of two keys compared: -1, 0 or 1. As two numbers: a double\n" \
    "-- holds 12 digits exactly but not 18, and Lua compares strings with\n" \
    "-- strcoll.\n" \
    "local function tcmp(a, b)\n" \
    "  local ta, tb = sub(a, 1, 18), sub(b, 1, 18)\n" \
    "  if ta == tb then return 0 end\n" \
    "  local x, y = tonumber(sub(ta, 1, 12)), tonumber(sub(tb, 1, 12))\n" \
    "  if x == y then x, y = tonumber(sub(ta, 13)), tonumber(sub(tb, 13)) end\n" \
    "  return x < y and -1 or 1\n" \
    "end\n" \
    "-- Keys in run order: start, then run id byte by byte.\n" \
    "local function kcmp(a, b)\n" \
    "  local c = tcmp(a, b)\n" \
    "  if c ~= 0 or a == b then return c end\n" \
    "  for i = 19, math.min(#a, #b) do\n" \
    "    local x, y = byte(a, i), byte(b, i)\n" \
    "    if x ~= y then return x < y and -1 or 1 end\n" \
    "  end\n" \
    "  return #a < #b and -1 or 1\n" \
    "end\n" \
    "-- A job's index (false: none) -> the keys of its runs, oldest first, and\n" \
    "-- the text of its run when it is kept whole (a key never starts with {).\n" \
    "local function index_of(ix)\n" \
    "  if not ix then return {}, nil end\n" \
    "  local z = find(ix, '\\0', 1, true)\n" \
    "  if z and byte(ix, z + 1) == 123 then return { sub(ix, 1, z - 1) }, sub(ix, z + 1) end\n" \
    "  local keys, pos = {}, 1\n" \
    "  while true do\n" \
    "    keys[#keys + 1] = sub(ix, pos, (z or 0) - 1)\n" \
    "    if not z then return keys, nil end\n" \
    "    pos = z + 1\n" \
    "    z = find(ix, '\\0', pos, true)\n" \
    "  end\n" \
    "end\n"

/* Writing runs (complete_jobs and record_runs): job indexes, texts and
 * bucket memberships, pruning per job and by age. */
#define CHR_REDIS_RUNS \
    "-- A call's writes: SET (job id, index: sent in order, the last wins),\n" \
    "-- ADD (bucket -> jobs that join it), then IX (job -> index as changed\n" \
    "-- by the paths below, false for none) and MEM (bucket -> job -> in or\n" \
    "-- out), whose final state goes after them, then GONE (keys of texts to\n" \
    "-- remove), after the texts added: a run added and pruned by one call\n" \
    "-- ends removed.\n" \
    "local SET, ADD, IX, MEM, GONE = {}, {}, {}, {}, {}\n" \
    "local function member(b, job, on)\n" \
    "  local m = MEM[b]\n" \
    "  if not m then\n" \
    "    m = {}\n" \
    "    MEM[b] = m\n" \
    "  end\n" \
    "  m[job] = on\n" \
    "end\n" \
    "-- Drops keys from the front (the oldest) while there are more than keep,\n" \
    "-- or the oldest started before cut (a key; '': no limit), sets the index\n" \
    "-- of the keys left, and takes the job out of the buckets it has no run\n" \
    "-- in any more. Returns the position of the first key left.\n" \
    "local function trim(job, keys, keep, cut)\n" \
    "  local from = 1\n" \
    "  while from <= #keys and (#keys - from + 1 > keep or (cut ~= '' and tcmp(keys[from], cut) < 0)) do\n" \
    "    GONE[#GONE + 1] = keys[from]\n" \
    "    from = from + 1\n" \
    "  end\n" \
    "  IX[job] = from <= #keys and table.concat(keys, '\\0', from)\n" \
    "  local front = from <= #keys and sub(keys[from], 1, 14) or ''\n" \
    "  for k = 1, from - 1 do\n" \
    "    local b = sub(keys[k], 1, 14)\n" \
    "    if b ~= front then member(b, job, false) end\n" \
    "  end\n" \
    "  return from\n" \
    "end\n" \
    "-- Adds a run (entry: \"<key>\\0<JSON text>\") to job, whose index is ix,\n" \
    "-- then prunes it to keep runs and to the age limit cut. The job's runs\n" \
    "-- are then kept by key, their texts in P:run.\n" \
    "local function add_run(job, ix, keep, entry, cut)\n" \
    "  local keys, text = index_of(ix)\n" \
    "  if text then q('HSET', RUN, keys[1], text) end\n" \
    "  local z = find(entry, '\\0', 1, true)\n" \
    "  local key = sub(entry, 1, z - 1)\n" \
    "  q('HSET', RUN, key, sub(entry, z + 1))\n" \
    "  local at = #keys\n" \
    "  while at > 0 and kcmp(keys[at], key) > 0 do at = at - 1 end\n" \
    "  if at == 0 or keys[at] ~= key then table.insert(keys, at + 1, key) end\n" \
    "  local from = trim(job, keys, keep, cut)\n" \
    "  -- In its bucket unless pruned (then older than every run kept).\n" \
    "  if from <= #keys and kcmp(key, keys[from]) >= 0 then member(sub(key, 1, 14), job, true) end\n" \
    "end\n" \
    "local function bulk(cmd, key, list)\n" \
    "  for i = 1, #list, 1000 do redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list))) end\n" \
    "end\n" \
    "local function flush_runs()\n" \
    "  qflush()\n" \
    "  local del = {}\n" \
    "  for job, ix in pairs(IX) do\n" \
    "    if ix then\n" \
    "      SET[#SET + 1] = job\n" \
    "      SET[#SET + 1] = ix\n" \
    "    else\n" \
    "      del[#del + 1] = job\n" \
    "    end\n" \
    "  end\n" \
    "  bulk('HSET', RJ, SET)\n" \
    "  bulk('HDEL', RJ, del)\n" \
    "  bulk('HDEL', RUN, GONE)\n" \
    "  for b, jobs in pairs(ADD) do\n" \
    "    bulk('SADD', rt_key(b), jobs)\n" \
    "    redis.call('ZADD', RTB, b, b)\n" \
    "  end\n" \
    "  for b, m in pairs(MEM) do\n" \
    "    local add, rem = {}, {}\n" \
    "    for job, on in pairs(m) do\n" \
    "      if on then add[#add + 1] = job else rem[#rem + 1] = job end\n" \
    "    end\n" \
    "    if #add > 0 then\n" \
    "      bulk('SADD', rt_key(b), add)\n" \
    "      redis.call('ZADD', RTB, b, b)\n" \
    "    end\n" \
    "    if #rem > 0 then\n" \
    "      bulk('SREM', rt_key(b), rem)\n" \
    "      if #add == 0 and not ADD[b] and redis.call('EXISTS', rt_key(b)) == 0 then\n" \
    "        redis.call('ZREM', RTB, b)\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  SET, ADD, IX, MEM, GONE = {}, {}, {}, {}, {}\n" \
    "end\n" \
    "-- The indexes of jobs, from P:rj.\n" \
    "local function indexes(jobs)\n" \
    "  if #jobs <= 1000 then return redis.call('HMGET', RJ, unpack(jobs)) end\n" \
    "  local got = {}\n" \
    "  for i = 1, #jobs, 1000 do\n" \
    "    local part = redis.call('HMGET', RJ, unpack(jobs, i, math.min(i + 999, #jobs)))\n" \
    "    for k = 1, #part do got[i + k - 1] = part[k] end\n" \
    "  end\n" \
    "  return got\n" \
    "end\n" \
    "-- Prunes the runs that started before cut (a key) of at most max jobs,\n" \
    "-- taken from the oldest buckets.\n" \
    "local function prune_age(cut, max)\n" \
    "  local cb = sub(cut, 1, 14)\n" \
    "  while max > 0 do\n" \
    "    local bs = redis.call('ZRANGEBYSCORE', RTB, '-inf', '(' .. cb, 'LIMIT', 0, 1)\n" \
    "    if #bs == 0 then break end\n" \
    "    local jobs = redis.call('SPOP', rt_key(bs[1]), max)\n" \
    "    if #jobs < max then redis.call('ZREM', RTB, bs[1]) end\n" \
    "    max = max - #jobs\n" \
    "    local got = indexes(jobs)\n" \
    "    for i, job in ipairs(jobs) do\n" \
    "      local ix = IX[job]\n" \
    "      if ix == nil then ix = got[i] end\n" \
    "      local keys, text = index_of(ix)\n" \
    "      if text then\n" \
    "        -- A run kept whole: it goes, or stays as it is.\n" \
    "        if tcmp(keys[1], cut) < 0 then IX[job] = false end\n" \
    "      elseif #keys > 0 then\n" \
    "        trim(job, keys, #keys, cut)\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  flush_runs()\n" \
    "end\n" \
    "-- Writes runs (job ids and entries; keeps: their keep counts where not\n" \
    "-- keep), after pruning by age when max (how many jobs it may visit) is\n" \
    "-- not 0. A job without runs gets its first one whole: one field, and one\n" \
    "-- bucket entry. unique: the caller knows that no job comes twice.\n" \
    "local function write_runs(jobs, entries, keeps, keep, cut, max, unique)\n" \
    "  if max > 0 then prune_age(cut, max) end\n" \
    "  if #jobs == 0 then return end\n" \
    "  local got, first, ns, pb, pl, np = indexes(jobs), {}, #SET, nil, nil, 0\n" \
    "  for r = 1, #jobs do\n" \
    "    local job, entry, ix = jobs[r], entries[r], got[r]\n" \
    "    if not unique then\n" \
    "      if IX[job] ~= nil then ix = IX[job] elseif first[job] then ix = first[job] end\n" \
    "    end\n" \
    "    if ix or (not unique and IX[job] == false) then\n" \
    "      add_run(job, ix, keeps[r] or keep, entry, cut)\n" \
    "    else\n" \
    "      SET[ns + 1], SET[ns + 2], ns = job, entry, ns + 2\n" \
    "      if not unique then first[job] = entry end\n" \
    "      -- Runs come in about the order they started: most share the bucket\n" \
    "      -- of the one before.\n" \
    "      if not (pb and find(entry, pb, 1, true) == 1) then\n" \
    "        pb = sub(entry, 1, 14)\n" \
    "        pl = ADD[pb]\n" \
    "        if not pl then\n" \
    "          pl = {}\n" \
    "          ADD[pb] = pl\n" \
    "        end\n" \
    "        np = #pl\n" \
    "      end\n" \
    "      np = np + 1\n" \
    "      pl[np] = job\n" \
    "    end\n" \
    "  end\n" \
    "  flush_runs()\n" \
    "end\n"

enum {
  CHR_RS_CREATE,
  CHR_RS_CREATES,
  CHR_RS_WRITE,
  CHR_RS_DELETE,
  CHR_RS_GETS,
  CHR_RS_CLAIM,
  CHR_RS_COMPLETE,
  CHR_RS_RECOVER,
  CHR_RS_EXTEND,
  CHR_RS_QUERY,
  CHR_RS_REINDEX,
  CHR_RS_NEXT,
  CHR_RS_RUNS,
  CHR_RS_QRUNS,
  CHR_RS_SCLAIM,
  CHR_RS_SRECOVER,
  CHR_RS_SNEXT,
  CHR_RS_QCLAIM,
  CHR_RS_QBUILD,
  CHR_RS__COUNT
};

static const char *const chr_redis_scripts[CHR_RS__COUNT + 1] = {
    /* CHR_RS_CREATE */
    CHR_REDIS_PRELUDE
    "-- create: id, nset, field/value pairs -> {1, updated_at} or {0} (duplicate)\n"
    "local id = arg()\n"
    "local sets = args(tonumber(arg()) * 2)\n"
    "local k = jkey(id)\n"
    "if redis.call('EXISTS', k) == 1 then return { 0 } end\n"
    "local now = fmt(stamps(1))\n"
    "sets[#sets + 1] = 'updated_at'\n"
    "sets[#sets + 1] = now\n"
    "redis.call('HSET', k, unpack(sets))\n"
    "local n = apply({ s = false, t = false, p = false, l = false, c = false }, sets, {})\n"
    "local touched, meta = meta_of(sets, {})\n"
    "n.iv = touched and meta_index(id, k, meta) or nil\n"
    "reindex(id, nil, n)\n"
    "qflush()\n"
    "if n.s == 'scheduled' and n.t then redis.call('PUBLISH', P .. ':wake', n.t) end\n"
    "return { 1, now }\n",
    /* CHR_RS_CREATES */
    CHR_REDIS_PRELUDE
    "-- create_jobs: n, then per record: id, nset, field/value pairs -> a\n"
    "-- string of n characters, '1' created, '0' duplicate (an id stored\n"
    "-- already, or taken by an earlier record of the call). Each record is\n"
    "-- written as the create script writes one; the engines hear of the call\n"
    "-- once, at the earliest time of the scheduled jobs it created. A record's\n"
    "-- pairs are read where they are in ARGV (no table per record: a call\n"
    "-- carries 1,000 of them).\n"
    "local n = tonumber(arg())\n"
    "local res, seen, at, made, ids, keys, froms = {}, {}, {}, 0, {}, {}, {}\n"
    "for j = 1, n do\n"
    "  local id = ARGV[ai + 1]\n"
    "  ids[j], keys[j], froms[j] = id, jkey(id), ai + 3\n"
    "  ai = ai + 2 + tonumber(ARGV[ai + 2]) * 2\n"
    "end\n"
    "-- One EXISTS of them all: none stored (the usual case) spares one call\n"
    "-- per record.\n"
    "local any = redis.call('EXISTS', unpack(keys)) > 0\n"
    "for j = 1, n do\n"
    "  local id = ids[j]\n"
    "  if seen[id] or (any and redis.call('EXISTS', keys[j]) == 1) then\n"
    "    res[j] = '0'\n"
    "  else\n"
    "    seen[id] = true\n"
    "    res[j] = '1'\n"
    "    made = made + 1\n"
    "    at[made] = j\n"
    "  end\n"
    "end\n"
    "if made == 0 then return table.concat(res) end\n"
    "local base, wake = stamps(made), false\n"
    "for m = 1, made do\n"
    "  local j = at[m]\n"
    "  local id, k, from = ids[j], keys[j], froms[j]\n"
    "  local to = from + tonumber(ARGV[from - 1]) * 2 - 1\n"
    "  redis.call('HSET', k, 'updated_at', fmt(base + m - 1), unpack(ARGV, from, to))\n"
    "  local nw, touched, meta = { s = false, t = false, p = false, l = false, c = false }, false, false\n"
    "  for i = from, to, 2 do\n"
    "    local f = NAMES[ARGV[i]]\n"
    "    if f then\n"
    "      nw[f] = ARGV[i + 1]\n"
    "    elseif ARGV[i] == 'x:metadata' then\n"
    "      touched, meta = true, ARGV[i + 1]\n"
    "    end\n"
    "  end\n"
    "  nw.iv = touched and meta_index(id, k, meta) or nil\n"
    "  reindex(id, nil, nw)\n"
    "  if nw.s == 'scheduled' and nw.t and (not wake or tonumber(nw.t) < tonumber(wake)) then\n"
    "    wake = nw.t\n"
    "  end\n"
    "end\n"
    "qflush()\n"
    "if wake then redis.call('PUBLISH', P .. ':wake', wake) end\n"
    "return table.concat(res)\n",
    /* CHR_RS_WRITE */
    CHR_REDIS_PRELUDE
    "-- update / compare-and-swap: id, nexp, expected pairs, nabsent, fields\n"
    "-- expected absent, nset, pairs, ndel, fields\n"
    "-- -> {1, record} | {0} (mismatch) | {-1} (not found)\n"
    "local id = arg()\n"
    "local exp = args(tonumber(arg()) * 2)\n"
    "local absent = args(tonumber(arg()))\n"
    "local sets = args(tonumber(arg()) * 2)\n"
    "local dels = args(tonumber(arg()))\n"
    "local k = jkey(id)\n"
    "local o = state(k)\n"
    "if not o then return { -1 } end\n"
    "if #exp > 0 then\n"
    "  local f = {}\n"
    "  for i = 1, #exp, 2 do f[#f + 1] = exp[i] end\n"
    "  local have = redis.call('HMGET', k, unpack(f))\n"
    "  for i = 1, #f do\n"
    "    if have[i] ~= exp[2 * i] then return { 0 } end\n"
    "  end\n"
    "end\n"
    "if #absent > 0 then\n"
    "  local have = redis.call('HMGET', k, unpack(absent))\n"
    "  for i = 1, #absent do\n"
    "    if have[i] then return { 0 } end\n"
    "  end\n"
    "end\n"
    "sets[#sets + 1] = 'updated_at'\n"
    "sets[#sets + 1] = fmt(stamps(1))\n"
    "redis.call('HSET', k, unpack(sets))\n"
    "if #dels > 0 then redis.call('HDEL', k, unpack(dels)) end\n"
    "local n = apply(o, sets, dels)\n"
    "local touched, meta = meta_of(sets, dels)\n"
    "if touched then n.iv = meta_index(id, k, meta) end\n"
    "reindex(id, o, n)\n"
    "qflush()\n"
    "if n.s == 'scheduled' and n.t and (o.s ~= n.s or o.t ~= n.t) then\n"
    "  redis.call('PUBLISH', P .. ':wake', n.t)\n"
    "end\n"
    "return { 1, redis.call('HGETALL', k) }\n",
    /* CHR_RS_DELETE */
    CHR_REDIS_PRELUDE
    "-- delete: id -> 1 | 0\n"
    "local id = arg()\n"
    "local k = jkey(id)\n"
    "local t = redis.call('TYPE', k).ok\n"
    "if t ~= 'hash' and t ~= 'none' then\n"
    "  -- not written by chronis: delete_job is how it is cleared\n"
    "  redis.call('DEL', k)\n"
    "  redis.call('ZREM', JOBS, id)\n"
    "  redis.call('ZREM', LEASE, id)\n"
    "  return 1\n"
    "end\n"
    "local o = state(k)\n"
    "if not o then return 0 end\n"
    "meta_index(id, k, false, true)\n"
    "redis.call('DEL', k)\n"
    "reindex(id, o, nil)\n"
    "qflush()\n"
    "return 1\n",
    /* CHR_RS_GETS */
    CHR_REDIS_PRELUDE
    "-- get_jobs_batch: ids -> records of the jobs found, each id once\n"
    "local out, seen = {}, {}\n"
    "for i = 1, #ARGV do\n"
    "  local id = ARGV[i]\n"
    "  if not seen[id] then\n"
    "    seen[id] = true\n"
    "    local h = redis.pcall('HGETALL', jkey(id))\n"
    "    if not h.err and #h > 0 then out[#out + 1] = h end\n"
    "  end\n"
    "end\n"
    "return out\n",
    /* CHR_RS_CLAIM */
    CHR_REDIS_PRELUDE
    "-- claim_due_jobs: now, limit, owner, lease_until, issued\n"
    "-- -> {updated_at, earliest next_run_time still scheduled ('' when none or\n"
    "--     when the batch is full), job id...}; the caller reads the records.\n"
    "local now, limit, owner = arg(), tonumber(arg()), arg()\n"
    "local lease = waited(arg(), arg())\n"
    "local levels = redis.call('ZREVRANGEBYSCORE', P .. ':prios', '+inf', '(10')\n"
    "for p = 10, 0, -1 do levels[#levels + 1] = tostring(p) end\n"
    "for _, p in ipairs(redis.call('ZREVRANGEBYSCORE', P .. ':prios', '(0', '-inf')) do\n"
    "  levels[#levels + 1] = p\n"
    "end\n"
    "local out, n, st = { '', '' }, 0, nil\n"
    "idx()\n"
    "-- Claimed jobs move from due:<p> to lease (see place in the prelude).\n"
    "local zadd\n"
    "local function send()\n"
    "  if zadd and #zadd > 2 then redis.call(unpack(zadd)) end\n"
    "  zadd = { 'ZADD', LEASE }\n"
    "end\n"
    "send()\n"
    "for _, p in ipairs(levels) do\n"
    "  if n >= limit then break end\n"
    "  local key = due_key(p)\n"
    "  local r = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, limit - n)\n"
    "  if #r > 0 then\n"
    "    if not st then st = fmt(stamps(1)) end\n"
    "    -- The due members are the front of the set: drop them by rank.\n"
    "    redis.call('ZREMRANGEBYRANK', key, 0, #r - 1)\n"
    "    for i = 1, #r do\n"
    "      local id = r[i]\n"
    "      -- A key that is not a hash (not written by chronis) is passed over,\n"
    "      -- out of due: an error here would leave the batch half done.\n"
    "      local w = redis.pcall('HSET', jkey(id), 'status', 'running', 'claimed_by', owner,\n"
    "        'lease_until', lease, 'updated_at', st)\n"
    "      if type(w) ~= 'table' or not w.err then\n"
    "        if #IDX > 0 then\n"
    "          local iv = redis.call('HMGET', jkey(id), unpack(SF, 7))\n"
    "          for x, path in ipairs(IDX) do\n"
    "            if iv[x] then\n"
    "              q('ZREM', tdue_key(path, p, iv[x]), id)\n"
    "              q('ZADD', tlease_key(path, iv[x]), lease, id)\n"
    "            end\n"
    "          end\n"
    "        end\n"
    "        n = n + 1\n"
    "        out[n + 2] = id\n"
    "        zadd[#zadd + 1] = lease\n"
    "        zadd[#zadd + 1] = id\n"
    "        if #zadd > 2000 then send() end\n"
    "      end\n"
    "    end\n"
    "  elseif tonumber(p) > 10 or tonumber(p) < 0 then\n"
    "    if redis.call('EXISTS', key) == 0 then redis.call('ZREM', P .. ':prios', p) end\n"
    "  end\n"
    "end\n"
    "send()\n"
    "qflush()\n"
    "out[1] = st or ''\n"
    "if n < limit then\n"
    "  for _, p in ipairs(levels) do\n"
    "    local f = redis.call('ZRANGE', due_key(p), 0, 0, 'WITHSCORES')\n"
    "    if f[2] and (out[2] == '' or tonumber(f[2]) < tonumber(out[2])) then out[2] = f[2] end\n"
    "  end\n"
    "end\n"
    "return out\n",
    /* CHR_RS_COMPLETE */
    CHR_REDIS_PRELUDE
    CHR_REDIS_RUNKEYS
    CHR_REDIS_RUNS
    "-- complete_jobs: n, then per item: id, owner, mode (d delete, u update;\n"
    "-- D, U: with a run of the item's job kept as the store's default says,\n"
    "-- E, V: with a run of its own job and keep count), nset, pairs, ndel,\n"
    "-- fields, then its run: (job id, keep count,) entry. After the\n"
    "-- items, when any has a run: the store's keep count, the age limit (a\n"
    "-- key) and how many jobs pruning by age may visit (0: not now). The\n"
    "-- runs of the items that apply are written with them.\n"
    "-- -> per item 'ok' | 'not_found' | 'conflict' (then why runs were not\n"
    "-- written, if they were not)\n"
    "local n = tonumber(arg())\n"
    "local res, seen, base, wake = {}, {}, nil, false\n"
    "local rjobs, rents, rkeeps, nr, any, uniq = {}, {}, {}, 0, false, true\n"
    "for j = 1, n do\n"
    "  local id, owner, mode = arg(), arg(), arg()\n"
    "  local sets = args(tonumber(arg()) * 2)\n"
    "  local dels = args(tonumber(arg()))\n"
    "  local rjob, rkeep, rent\n"
    "  if mode == 'D' or mode == 'U' then\n"
    "    rjob, rent, any = id, arg(), true\n"
    "  elseif mode == 'E' or mode == 'V' then\n"
    "    rjob, rkeep, rent, any, uniq = arg(), tonumber(arg()), arg(), true, false\n"
    "  end\n"
    "  if seen[id] then\n"
    "    qflush()\n"
    "    uniq = false\n"
    "  end\n"
    "  seen[id] = true\n"
    "  local k = jkey(id)\n"
    "  local o = state(k)\n"
    "  if not o then\n"
    "    res[j] = 'not_found'\n"
    "  elseif o.c ~= owner then\n"
    "    res[j] = 'conflict'\n"
    "  else\n"
    "    if not base then base = stamps(n) end\n"
    "    if mode == 'd' or mode == 'D' or mode == 'E' then\n"
    "      meta_index(id, k, false, true)\n"
    "      redis.call('DEL', k)\n"
    "      reindex(id, o, nil)\n"
    "    else\n"
    "      sets[#sets + 1] = 'updated_at'\n"
    "      sets[#sets + 1] = fmt(base + j - 1)\n"
    "      redis.call('HSET', k, unpack(sets))\n"
    "      if #dels > 0 then redis.call('HDEL', k, unpack(dels)) end\n"
    "      local nw = apply(o, sets, dels)\n"
    "      local touched, meta = meta_of(sets, dels)\n"
    "      if touched then nw.iv = meta_index(id, k, meta) end\n"
    "      reindex(id, o, nw)\n"
    "      if nw.s == 'scheduled' and nw.t and (o.s ~= nw.s or o.t ~= nw.t) and\n"
    "          (not wake or tonumber(nw.t) < tonumber(wake)) then\n"
    "        wake = nw.t\n"
    "      end\n"
    "    end\n"
    "    res[j] = 'ok'\n"
    "    if rjob then\n"
    "      nr = nr + 1\n"
    "      rjobs[nr], rents[nr] = rjob, rent\n"
    "      if rkeep then rkeeps[nr] = rkeep end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "qflush()\n"
    "if any then\n"
    "  local keep, cut, max = tonumber(arg()), arg(), tonumber(arg())\n"
    "  -- The completions stand whatever becomes of their runs (a history key\n"
    "  -- edited by hand): the reason follows the results.\n"
    "  local ok, err = pcall(write_runs, rjobs, rents, rkeeps, keep, cut, max, uniq)\n"
    "  if not ok then res[n + 1] = 'runs not written: ' .. tostring(err) end\n"
    "end\n"
    "if wake then redis.call('PUBLISH', P .. ':wake', wake) end\n"
    "return res\n",
    /* CHR_RS_RECOVER */
    CHR_REDIS_PRELUDE
    "-- recover_expired_leases: now -> {count, earliest next_run_time or ''}\n"
    "local ids = redis.call('ZRANGEBYSCORE', LEASE, '-inf', '(' .. arg())\n"
    "if #ids == 0 then return { 0, '' } end\n"
    "local st = fmt(stamps(1))\n"
    "local count, early = 0, false\n"
    "for _, id in ipairs(ids) do\n"
    "  local o = state(jkey(id))\n"
    "  if o and o.s == 'running' then\n"
    "    recover_job(id, o, st)\n"
    "    if o.t and (not early or tonumber(o.t) < tonumber(early)) then early = o.t end\n"
    "    count = count + 1\n"
    "  else\n"
    "    q('ZREM', LEASE, id)\n"
    "  end\n"
    "end\n"
    "qflush()\n"
    "if early then redis.call('PUBLISH', P .. ':wake', early) end\n"
    "return { count, early or '' }\n",
    /* CHR_RS_EXTEND */
    CHR_REDIS_PRELUDE
    "-- extend_leases: owner, lease_until, issued, ids... -> count extended\n"
    "local owner = arg()\n"
    "local lease = waited(arg(), arg())\n"
    "local st, n = nil, 0\n"
    "for i = 4, #ARGV do\n"
    "  local id = ARGV[i]\n"
    "  local k = jkey(id)\n"
    "  local o = state(k)\n"
    "  if o and o.s == 'running' and o.c == owner then\n"
    "    if not st then st = fmt(stamps(1)) end\n"
    "    redis.call('HSET', k, 'lease_until', lease, 'updated_at', st)\n"
    "    reindex(id, o, { s = o.s, t = o.t, p = o.p, l = lease, c = o.c, q = o.q, iv = o.iv })\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "qflush()\n"
    "return n\n",
    /* CHR_RS_QUERY */
    CHR_REDIS_PRELUDE
    "-- query_jobs / count_jobs: mode (q records | c count), offset, limit\n"
    "-- (-1: none), page (1: the script may apply offset and limit), one (1:\n"
    "-- the only metadata condition is an equality or an $in on one path, whose\n"
    "-- values are the pairs sent below: the script pages and counts only when\n"
    "-- it reads those values' sets), statuses\n"
    "-- (space separated, '' any), trigger_type ('' any), next_run_time gte,\n"
    "-- lte, updated_at gte, lte (µs, '' unbounded), nids, ids..., nidx,\n"
    "-- (path, value)... of the metadata filters\n"
    "-- -> count | {paged (1: ordered, offset and limit applied), record...}\n"
    "-- The C side checks every filter again (chr_filter_match), and orders and\n"
    "-- pages the records itself when they are not paged.\n"
    "local mode, offset, limit, page = arg(), tonumber(arg()), tonumber(arg()), arg() == '1'\n"
    "local one = arg() == '1'\n"
    "local stlist, tt = arg(), arg()\n"
    "local tgte, tlte, ugte, ulte = arg(), arg(), arg(), arg()\n"
    "local ids = args(tonumber(arg()))\n"
    "local idx = args(tonumber(arg()) * 2)\n"
    "local sts, nst = {}, 0\n"
    "for s in string.gmatch(stlist, '%S+') do\n"
    "  sts[s] = true\n"
    "  nst = nst + 1\n"
    "end\n"
    "local bounded = tgte ~= '' or tlte ~= ''\n"
    "local tlo, thi = tonumber(tgte), tonumber(tlte)\n"
    "local ulo, uhi = tonumber(ugte), tonumber(ulte)\n"
    "local plain = tt == '' and not ulo and not uhi\n"
    "local lo = tgte ~= '' and tgte or '-inf'\n"
    "local hi = tlte ~= '' and tlte or (bounded and '(+inf' or '+inf')\n"
    "local out, n, skipped = { 0 }, 0, 0\n"
    "-- The key of job id when it passes the filters checked here, else nil.\n"
    "local function pass(id)\n"
    "  local k = jkey(id)\n"
    "  local v = redis.pcall('HMGET', k, 'status', 'next_run_time', 'updated_at', 'trigger_type')\n"
    "  if v.err or not v[1] then return nil end -- no job, or a key that is no job hash\n"
    "  if nst > 0 and not sts[v[1]] then return nil end\n"
    "  if tt ~= '' and v[4] ~= tt then return nil end\n"
    "  if bounded then\n"
    "    if not v[2] then return nil end\n"
    "    local x = tonumber(v[2])\n"
    "    if (tlo and x < tlo) or (thi and x > thi) then return nil end\n"
    "  end\n"
    "  if ulo or uhi then\n"
    "    if not v[3] then return nil end\n"
    "    local x = tonumber(v[3])\n"
    "    if (ulo and x < ulo) or (uhi and x > uhi) then return nil end\n"
    "  end\n"
    "  return k\n"
    "end\n"
    "-- Counts or keeps a match; false once the page is full.\n"
    "local function take(k)\n"
    "  if mode == 'c' then\n"
    "    n = n + 1\n"
    "    return true\n"
    "  end\n"
    "  if page and skipped < offset then\n"
    "    skipped = skipped + 1\n"
    "    return true\n"
    "  end\n"
    "  n = n + 1\n"
    "  out[n + 1] = redis.call('HGETALL', k)\n"
    "  return not (page and limit >= 0 and n >= limit)\n"
    "end\n"
    "local function result()\n"
    "  if mode == 'c' then return n end\n"
    "  out[1] = page and 1 or 0\n"
    "  return out\n"
    "end\n"
    "local function each(list)\n"
    "  for _, id in ipairs(list) do\n"
    "    local k = pass(id)\n"
    "    if k and not take(k) then return end\n"
    "  end\n"
    "end\n"
    "if #ids > 0 then\n"
    "  page = false\n"
    "  local seen, uniq = {}, {}\n"
    "  for _, id in ipairs(ids) do\n"
    "    if not seen[id] then\n"
    "      seen[id] = true\n"
    "      uniq[#uniq + 1] = id\n"
    "    end\n"
    "  end\n"
    "  each(uniq)\n"
    "  return result()\n"
    "end\n"
    "-- The smallest ready index among the equalities (best: its sets, one per\n"
    "-- value; several for the values of one $in), and bestn their jobs.\n"
    "local best, bestn, vals = nil, nil, {}\n"
    "if one then\n"
    "  if #idx > 0 and redis.call('HGET', P .. ':indexes', idx[1]) == 'ready' then\n"
    "    local seen = {}\n"
    "    best, bestn = {}, 0\n"
    "    for i = 2, #idx, 2 do\n"
    "      if not seen[idx[i]] then\n"
    "        seen[idx[i]] = true\n"
    "        vals[#vals + 1] = idx[i]\n"
    "        best[#best + 1] = idx_key(idx[1], idx[i])\n"
    "        bestn = bestn + redis.call('SCARD', best[#best])\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "else\n"
    "  for i = 1, #idx, 2 do\n"
    "    if redis.call('HGET', P .. ':indexes', idx[i]) == 'ready' then\n"
    "      local key = idx_key(idx[i], idx[i + 1])\n"
    "      local c = redis.call('SCARD', key)\n"
    "      if not best or c < bestn then best, bestn = { key }, c end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "-- A single equality with no ready index: the walks below do not check\n"
    "-- it, so C gets every candidate, and counts and pages them itself.\n"
    "if one and not best then\n"
    "  page = false\n"
    "  if mode == 'c' then mode = 'q' end\n"
    "end\n"
    "-- With the per-value sets ready (P:scoped), a single equality is\n"
    "-- answered from that value's sets: counts by their sizes, and a page of\n"
    "-- scheduled jobs by merging its tdue sets in query order (time, then id\n"
    "-- across levels; the jobs without a time last, by id), reading about\n"
    "-- offset + limit jobs instead of every job of the value.\n"
    "if best and one and redis.call('HGET', P .. ':scoped', idx[1]) == 'ready' then\n"
    "  local path = idx[1]\n"
    "  local function tkeys(s)\n"
    "    local z = {}\n"
    "    for _, v in ipairs(vals) do\n"
    "      if s == 'scheduled' then\n"
    "        for _, p in ipairs(redis.call('ZRANGE', P .. ':prios', 0, -1)) do z[#z + 1] = tdue_key(path, p, v) end\n"
    "        for p = 0, 10 do z[#z + 1] = tdue_key(path, tostring(p), v) end\n"
    "      elseif s == 'running' then\n"
    "        z[#z + 1] = tlease_key(path, v)\n"
    "      end\n"
    "    end\n"
    "    return z\n"
    "  end\n"
    "  -- The jobs of status s in the set st (of STK) among the values' jobs.\n"
    "  local function among(st)\n"
    "    local r = {}\n"
    "    for _, b in ipairs(best) do\n"
    "      for _, id in ipairs(redis.call('SINTER', st, b)) do r[#r + 1] = id end\n"
    "    end\n"
    "    return r\n"
    "  end\n"
    "  if mode == 'c' and plain and not bounded then\n"
    "    if nst == 0 then return bestn end\n"
    "    local sum = 0\n"
    "    for s in pairs(sts) do\n"
    "      for _, k in ipairs(tkeys(s)) do sum = sum + redis.call('ZCARD', k) end\n"
    "      sum = sum + #among(STK[s])\n"
    "    end\n"
    "    return sum\n"
    "  end\n"
    "  if mode == 'q' and page and nst == 1 and sts.scheduled then\n"
    "    local want = limit >= 0 and offset + limit or 1000\n"
    "    local chunk = math.min(1000, math.max(16, want))\n"
    "    local src = {}\n"
    "    local function fill(x)\n"
    "      x.buf = redis.call('ZRANGEBYSCORE', x.key, lo, hi, 'WITHSCORES', 'LIMIT', x.pos, chunk)\n"
    "      x.i, x.pos, x.last = 1, x.pos + #x.buf / 2, #x.buf < chunk * 2\n"
    "      return #x.buf > 0\n"
    "    end\n"
    "    for _, k in ipairs(tkeys('scheduled')) do\n"
    "      local x = { key = k, pos = 0 }\n"
    "      if fill(x) then src[#src + 1] = x end\n"
    "    end\n"
    "    while #src > 0 do\n"
    "      local bi, bt, bid\n"
    "      for j, x in ipairs(src) do\n"
    "        local id, t = x.buf[x.i], tonumber(x.buf[x.i + 1])\n"
    "        if not bi or t < bt or (t == bt and before(id, bid)) then bi, bt, bid = j, t, id end\n"
    "      end\n"
    "      local k = pass(bid)\n"
    "      if k and not take(k) then return result() end\n"
    "      local x = src[bi]\n"
    "      x.i = x.i + 2\n"
    "      if x.i > #x.buf and (x.last or not fill(x)) then table.remove(src, bi) end\n"
    "    end\n"
    "    if not bounded then\n"
    "      local rest = among(STK.scheduled)\n"
    "      table.sort(rest, before)\n"
    "      each(rest)\n"
    "    end\n"
    "    return result()\n"
    "  end\n"
    "end\n"
    "if best then\n"
    "  page = false\n"
    "  for _, b in ipairs(best) do each(redis.call('SMEMBERS', b)) end\n"
    "  return result()\n"
    "end\n"
    "local jobs = P .. ':jobs'\n"
    "-- The indexes that hold the jobs of status s (see place in the prelude).\n"
    "local function homes(s)\n"
    "  local z = {}\n"
    "  if s == 'scheduled' then\n"
    "    for _, p in ipairs(redis.call('ZRANGE', P .. ':prios', 0, -1)) do z[#z + 1] = DUEK[p] end\n"
    "    for p = 0, 10 do z[#z + 1] = DUEK[tostring(p)] end\n"
    "  elseif s == 'running' then\n"
    "    z[1] = LEASE\n"
    "  end\n"
    "  return z, STK[s]\n"
    "end\n"
    "if nst > 0 then\n"
    "  -- Few jobs of these statuses: their indexes; else the walk below.\n"
    "  local sum = 0\n"
    "  for s in pairs(sts) do\n"
    "    local z, set = homes(s)\n"
    "    for _, k in ipairs(z) do sum = sum + redis.call('ZCARD', k) end\n"
    "    sum = sum + redis.call('SCARD', set)\n"
    "  end\n"
    "  if mode == 'c' and plain and not bounded then return sum end\n"
    "  if sum <= 1000 or sum * 4 <= redis.call('ZCARD', jobs) then\n"
    "    page = false\n"
    "    for s in pairs(sts) do\n"
    "      local z, set = homes(s)\n"
    "      for _, k in ipairs(z) do each(redis.call('ZRANGE', k, 0, -1)) end\n"
    "      each(redis.call('SMEMBERS', set))\n"
    "    end\n"
    "    return result()\n"
    "  end\n"
    "elseif plain then\n"
    "  if mode == 'c' then return redis.call('ZCOUNT', jobs, lo, hi) end\n"
    "  if page then\n"
    "    for _, id in ipairs(redis.call('ZRANGEBYSCORE', jobs, lo, hi, 'LIMIT', offset, limit)) do\n"
    "      n = n + 1\n"
    "      local h = redis.pcall('HGETALL', jkey(id))\n"
    "      out[n + 1] = h.err and {} or h -- {}: no job (a key that is no job hash)\n"
    "    end\n"
    "    return result()\n"
    "  end\n"
    "end\n"
    "-- Walk the jobs in next_run_time order, by rank in slices, so that a page\n"
    "-- can stop early.\n"
    "local rank = 0\n"
    "if tgte ~= '' then rank = redis.call('ZCOUNT', jobs, '-inf', '(' .. tgte) end\n"
    "while true do\n"
    "  local r = redis.call('ZRANGE', jobs, rank, rank + 999, 'WITHSCORES')\n"
    "  for i = 1, #r, 2 do\n"
    "    local sv = r[i + 1]\n"
    "    if (sv == 'inf' and bounded) or (sv ~= 'inf' and thi and tonumber(sv) > thi) then\n"
    "      return result()\n"
    "    end\n"
    "    local k = pass(r[i])\n"
    "    if k and not take(k) then return result() end\n"
    "  end\n"
    "  if #r < 2000 then break end\n"
    "  rank = rank + 1000\n"
    "end\n"
    "return result()\n",
    /* CHR_RS_REINDEX */
    CHR_REDIS_PRELUDE
    "-- Builds a metadata index over the existing jobs, a slice per call: path,\n"
    "-- cursor, count -> next cursor ('0': done, the index is ready)\n"
    "local path, cursor, count = arg(), arg(), arg()\n"
    "local ix, sx = P .. ':indexes', P .. ':scoped'\n"
    "if cursor == '0' then\n"
    "  if redis.call('HGET', ix, path) == 'ready' and redis.call('HGET', sx, path) == 'ready' then\n"
    "    return '0'\n"
    "  end\n"
    "  -- An index built by a version without per-value sets stays ready for\n"
    "  -- queries while they are built.\n"
    "  redis.call('HSETNX', ix, path, 'building')\n"
    "end\n"
    "IDX = { path }\n"
    "local r = redis.call('ZSCAN', P .. ':jobs', cursor, 'COUNT', count)\n"
    "local ids = r[2]\n"
    "for i = 1, #ids, 2 do\n"
    "  local id = ids[i]\n"
    "  local k = jkey(id)\n"
    "  local ok, o = pcall(state, k, true)\n"
    "  if ok and o then\n"
    "    local v = meta_index(id, k, o.m or false)[1]\n"
    "    if v then\n"
    "      local key, score = tplace(o, path, v)\n"
    "      if key then q('ZADD', key, score, id) end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "qflush()\n"
    "if r[1] == '0' then\n"
    "  redis.call('HSET', ix, path, 'ready')\n"
    "  redis.call('HSET', sx, path, 'ready')\n"
    "end\n"
    "return r[1]\n",
    /* CHR_RS_NEXT */
    CHR_REDIS_PRELUDE
    "-- next_due_time: -> the earliest next_run_time of a scheduled job, '' when none\n"
    "local best = ''\n"
    "local levels = redis.call('ZRANGE', P .. ':prios', 0, -1)\n"
    "for p = 0, 10 do levels[#levels + 1] = tostring(p) end\n"
    "for _, p in ipairs(levels) do\n"
    "  local f = redis.call('ZRANGE', due_key(p), 0, 0, 'WITHSCORES')\n"
    "  if f[2] and (best == '' or tonumber(f[2]) < tonumber(best)) then best = f[2] end\n"
    "end\n"
    "return best\n",
    /* CHR_RS_RUNS */
    CHR_REDIS_PRELUDE
    CHR_REDIS_RUNKEYS
    CHR_REDIS_RUNS
    "-- record_runs: n, then per run: job id, keep count, entry; then the age\n"
    "-- limit (a key) and how many jobs pruning by age may visit -> n\n"
    "local n = tonumber(arg())\n"
    "local jobs, keeps, entries = {}, {}, {}\n"
    "for r = 1, n do\n"
    "  jobs[r], keeps[r], entries[r] = arg(), tonumber(arg()), arg()\n"
    "end\n"
    "local cut, max = arg(), tonumber(arg())\n"
    "write_runs(jobs, entries, keeps, 0, cut, max, false)\n"
    "return n\n",
    /* CHR_RS_QRUNS */
    CHR_REDIS_PRELUDE
    CHR_REDIS_RUNKEYS
    "-- query_runs: offset, limit (-1: none), started_at gte, lte (keys of 18\n"
    "-- digits, '' unbounded), nids, job ids..., noutcomes, outcomes (JSON\n"
    "-- text)..., func_name (JSON text, '' any), nmeta, (path, value)...\n"
    "-- -> {paged (1: in order, offset and limit applied), then per run: job\n"
    "-- id, key, stored text}\n"
    "-- The C side checks every filter again (chr_run_filter_match).\n"
    "local offset, limit = tonumber(arg()), tonumber(arg())\n"
    "local gte, lte = arg(), arg()\n"
    "local ids = args(tonumber(arg()))\n"
    "local outs, anyout = {}, false\n"
    "for _, o in ipairs(args(tonumber(arg()))) do outs[o], anyout = true, true end\n"
    "local func = arg()\n"
    "local meta = args(tonumber(arg()) * 2)\n"
    "local function at(t, path)\n"
    "  local ok, v = pcall(json_at, t, path)\n"
    "  return ok and v\n"
    "end\n"
    "local function pass(t)\n"
    "  if anyout and not outs[at(t, 'outcome') or ''] then return false end\n"
    "  if func ~= '' and at(t, 'func_name') ~= func then return false end\n"
    "  for i = 1, #meta, 2 do\n"
    "    if at(t, 'metadata.' .. meta[i]) ~= meta[i + 1] then return false end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local function within(k)\n"
    "  return (gte == '' or tcmp(k, gte) >= 0) and (lte == '' or tcmp(k, lte) <= 0)\n"
    "end\n"
    "local out, n, skipped = { 1 }, 0, 0\n"
    "-- Takes runs ({job, key, text or nil: in P:run}, in order) that pass;\n"
    "-- false once the page is full.\n"
    "local function take(list)\n"
    "  for i = 1, #list, 500 do\n"
    "    local need = {}\n"
    "    for k = i, math.min(i + 499, #list) do\n"
    "      if not list[k][3] then need[#need + 1] = list[k][2] end\n"
    "    end\n"
    "    local got = #need > 0 and redis.call('HMGET', RUN, unpack(need)) or {}\n"
    "    local g = 0\n"
    "    for k = i, math.min(i + 499, #list) do\n"
    "      local t = list[k][3]\n"
    "      if not t then\n"
    "        g = g + 1\n"
    "        t = got[g]\n"
    "      end\n"
    "      if t and pass(t) then\n"
    "        if skipped < offset then\n"
    "          skipped = skipped + 1\n"
    "        else\n"
    "          n = n + 1\n"
    "          local o = #out\n"
    "          out[o + 1], out[o + 2], out[o + 3] = list[k][1], list[k][2], t\n"
    "          if limit >= 0 and n >= limit then return false end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "if #ids > 0 then\n"
    "  local seen, uniq = {}, {}\n"
    "  for _, id in ipairs(ids) do\n"
    "    if not seen[id] then\n"
    "      seen[id] = true\n"
    "      uniq[#uniq + 1] = id\n"
    "    end\n"
    "  end\n"
    "  -- Several jobs: their runs, unpaged; the C side merges and pages.\n"
    "  if #uniq > 1 then out[1], offset, limit = 0, 0, -1 end\n"
    "  for _, id in ipairs(uniq) do\n"
    "    local keys, text = index_of(redis.call('HGET', RJ, id))\n"
    "    local list = {}\n"
    "    for k = #keys, 1, -1 do\n"
    "      if within(keys[k]) then list[#list + 1] = { id, keys[k], text } end\n"
    "    end\n"
    "    if not take(list) then return out end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "-- Every job: the buckets newest first, the runs of each in order.\n"
    "local hi = lte ~= '' and sub(lte, 1, 14) or '+inf'\n"
    "local lo = gte ~= '' and sub(gte, 1, 14) or '-inf'\n"
    "while true do\n"
    "  local bs = redis.call('ZREVRANGEBYSCORE', RTB, hi, lo, 'LIMIT', 0, 100)\n"
    "  for _, b in ipairs(bs) do\n"
    "    local jobs = redis.call('SMEMBERS', rt_key(b))\n"
    "    local list = {}\n"
    "    for i = 1, #jobs, 1000 do\n"
    "      local ixs = redis.call('HMGET', RJ, unpack(jobs, i, math.min(i + 999, #jobs)))\n"
    "      for j = 1, #ixs do\n"
    "        local keys, text = index_of(ixs[j])\n"
    "        for k = #keys, 1, -1 do\n"
    "          if sub(keys[k], 1, 14) == b and within(keys[k]) then\n"
    "            list[#list + 1] = { jobs[i + j - 1], keys[k], text }\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    table.sort(list, function(x, y) return kcmp(x[2], y[2]) > 0 end)\n"
    "    if not take(list) then return out end\n"
    "  end\n"
    "  if #bs < 100 then return out end\n"
    "  hi = '(' .. bs[#bs]\n"
    "end\n",
    /* CHR_RS_SCLAIM */
    CHR_REDIS_PRELUDE
    CHR_REDIS_SCOPE
    "-- scoped claim_due_jobs: now, limit, owner, lease_until, issued, cursor\n"
    "-- (a priority level, '' from the start), skips (per source of that level,\n"
    "-- comma separated), then the scope (read_scope)\n"
    "-- -> {updated_at or '', cursor ('' when done), skips, job id...}\n"
    "-- Each level's sources (the per-value due sets of the driver's values,\n"
    "-- else the level's due set) are merged in (time, id) order and taken\n"
    "-- like claim_due_jobs takes them. At most WALK entries are looked at per\n"
    "-- call: a full walk returns a cursor to go on from (skips: the entries\n"
    "-- left in place at the front of each source).\n"
    "local WALK = tonumber(ARGV[#ARGV])\n"
    "local now, limit, owner = arg(), tonumber(arg()), arg()\n"
    "local lease = waited(arg(), arg())\n"
    "local clevel, cskips = arg(), arg()\n"
    "local conds = read_scope()\n"
    "local drv = driver(conds)\n"
    "idx()\n"
    "local tnow = tonumber(now)\n"
    "local out, n, st, seen = { '', '', '' }, 0, nil, 0\n"
    "for _, p in ipairs(levels_desc()) do\n"
    "  if n >= limit then break end\n"
    "  if clevel == '' or tonumber(p) <= tonumber(clevel) then\n"
    "    local keys = {}\n"
    "    if drv then\n"
    "      for i, v in ipairs(drv.vals) do keys[i] = tdue_key(drv.path, p, v) end\n"
    "    else\n"
    "      keys[1] = due_key(p)\n"
    "    end\n"
    "    local skips, bufs = {}, {}\n"
    "    local i = 0\n"
    "    for x in string.gmatch(p == clevel and cskips or '', '%d+') do\n"
    "      i = i + 1\n"
    "      skips[i] = tonumber(x)\n"
    "    end\n"
    "    for x = 1, #keys do\n"
    "      skips[x] = skips[x] or 0\n"
    "      bufs[x] = { r = {}, pos = 1, done = false }\n"
    "    end\n"
    "    while n < limit do\n"
    "      if seen >= WALK then\n"
    "        out[2], out[3] = p, table.concat(skips, ',')\n"
    "        break\n"
    "      end\n"
    "      local bi, bid, bsc\n"
    "      for x = 1, #keys do\n"
    "        local b = bufs[x]\n"
    "        if b.pos > #b.r and not b.done then\n"
    "          qflush() -- ranks count the claims of this call\n"
    "          local want = math.min(math.max(limit - n, 16), WALK - seen)\n"
    "          b.r = redis.call('ZRANGEBYSCORE', keys[x], '-inf', now, 'WITHSCORES', 'LIMIT', skips[x], want)\n"
    "          b.pos, b.done = 1, #b.r < 2 * want\n"
    "        end\n"
    "        if b.pos <= #b.r then\n"
    "          local id, sc = b.r[b.pos], tonumber(b.r[b.pos + 1])\n"
    "          if not bi or sc < bsc or (sc == bsc and before(id, bid)) then bi, bid, bsc = x, id, sc end\n"
    "        end\n"
    "      end\n"
    "      if not bi then break end\n"
    "      bufs[bi].pos = bufs[bi].pos + 2\n"
    "      seen = seen + 1\n"
    "      local o, stale = in_scope(conds, bid, 'scheduled')\n"
    "      if stale then\n"
    "        q('ZREM', keys[bi], bid)\n"
    "      elseif o and o.t and tonumber(o.t) <= tnow then\n"
    "        if not st then st = fmt(stamps(1)) end\n"
    "        redis.call('HSET', jkey(bid), 'status', 'running', 'claimed_by', owner, 'lease_until', lease,\n"
    "          'updated_at', st)\n"
    "        reindex(bid, o, { s = 'running', t = o.t, p = o.p, l = lease, c = owner, q = o.q, iv = o.iv })\n"
    "        n = n + 1\n"
    "        out[n + 3] = bid\n"
    "      else\n"
    "        skips[bi] = skips[bi] + 1\n"
    "      end\n"
    "    end\n"
    "    if out[2] ~= '' then break end\n"
    "  end\n"
    "end\n"
    "qflush()\n"
    "out[1] = st or ''\n"
    "return out\n",
    /* CHR_RS_SRECOVER */
    CHR_REDIS_PRELUDE
    CHR_REDIS_SCOPE
    "-- scoped recover_expired_leases: now, cursor (source number, '' from the\n"
    "-- start), skip (entries left at its front), then the scope (read_scope)\n"
    "-- -> {count, earliest next_run_time or '', cursor ('' when done), skip}\n"
    "-- Sources: the per-value lease sets of the driver's values, else lease;\n"
    "-- at most WALK entries looked at per call.\n"
    "local WALK = tonumber(ARGV[#ARGV])\n"
    "local now, cur, skip = arg(), arg(), tonumber(arg())\n"
    "local conds = read_scope()\n"
    "local drv = driver(conds)\n"
    "idx()\n"
    "local keys = {}\n"
    "if drv then\n"
    "  for i, v in ipairs(drv.vals) do keys[i] = tlease_key(drv.path, v) end\n"
    "else\n"
    "  keys[1] = LEASE\n"
    "end\n"
    "local count, early, seen, st = 0, false, 0, nil\n"
    "local ki = cur == '' and 1 or tonumber(cur)\n"
    "while ki <= #keys do\n"
    "  if seen >= WALK then break end\n"
    "  local want = WALK - seen\n"
    "  local ids = redis.call('ZRANGEBYSCORE', keys[ki], '-inf', '(' .. now, 'LIMIT', skip, want)\n"
    "  for _, id in ipairs(ids) do\n"
    "    seen = seen + 1\n"
    "    local o, stale = in_scope(conds, id, 'running')\n"
    "    if stale then\n"
    "      q('ZREM', keys[ki], id)\n"
    "    elseif o then\n"
    "      if not st then st = fmt(stamps(1)) end\n"
    "      recover_job(id, o, st)\n"
    "      if o.t and (not early or tonumber(o.t) < tonumber(early)) then early = o.t end\n"
    "      count = count + 1\n"
    "    else\n"
    "      skip = skip + 1\n"
    "    end\n"
    "  end\n"
    "  qflush()\n"
    "  if #ids == want then break end\n"
    "  ki, skip = ki + 1, 0\n"
    "end\n"
    "if early then redis.call('PUBLISH', P .. ':wake', early) end\n"
    "if ki > #keys then return { count, early or '', '', '0' } end\n"
    "return { count, early or '', tostring(ki), tostring(skip) }\n",
    /* CHR_RS_SNEXT */
    CHR_REDIS_PRELUDE
    CHR_REDIS_SCOPE
    "-- scoped next_due_time: cursor (source number, '' from the start), skip,\n"
    "-- best so far ('' none), then the scope (read_scope)\n"
    "-- -> {cursor ('' when done), skip, earliest next_run_time or ''}\n"
    "-- Sources: every level's per-value due sets of the driver's values, else\n"
    "-- every due set; each is read from its front up to its first job in the\n"
    "-- scope, at most WALK entries looked at per call.\n"
    "local WALK = tonumber(ARGV[#ARGV])\n"
    "local cur, skip, best = arg(), tonumber(arg()), arg()\n"
    "local conds = read_scope()\n"
    "local drv = driver(conds)\n"
    "idx()\n"
    "local keys = {}\n"
    "local levels = redis.call('ZRANGE', P .. ':prios', 0, -1)\n"
    "for p = 0, 10 do levels[#levels + 1] = tostring(p) end\n"
    "for _, p in ipairs(levels) do\n"
    "  if drv then\n"
    "    for _, v in ipairs(drv.vals) do keys[#keys + 1] = tdue_key(drv.path, p, v) end\n"
    "  else\n"
    "    keys[#keys + 1] = due_key(p)\n"
    "  end\n"
    "end\n"
    "local seen = 0\n"
    "local ki = cur == '' and 1 or tonumber(cur)\n"
    "while ki <= #keys do\n"
    "  local found = false\n"
    "  while not found do\n"
    "    if seen >= WALK then return { tostring(ki), tostring(skip), best } end\n"
    "    local want = math.min(WALK - seen, 100)\n"
    "    local r = redis.call('ZRANGEBYSCORE', keys[ki], '-inf', best == '' and '+inf' or '(' .. best,\n"
    "      'WITHSCORES', 'LIMIT', skip, want)\n"
    "    for i = 1, #r, 2 do\n"
    "      seen = seen + 1\n"
    "      local o = in_scope(conds, r[i], 'scheduled')\n"
    "      if o and o.t then\n"
    "        best, found = r[i + 1], true\n"
    "        break\n"
    "      end\n"
    "      skip = skip + 1\n"
    "      if seen >= WALK then break end\n"
    "    end\n"
    "    if #r < 2 * want then break end\n"
    "  end\n"
    "  ki, skip = ki + 1, 0\n"
    "end\n"
    "return { '', '0', best }\n",
    /* CHR_RS_QCLAIM */
    CHR_REDIS_PRELUDE
    CHR_REDIS_SCOPE
    "-- claim_due_jobs with queues: now, limit, owner, lease_until, issued,\n"
    "-- nqueues, then per queue: name, limit, global limit, rate limit, its rate\n"
    "-- window's start and the lifetime of its counter (ms); then the scope\n"
    "-- (read_scope), then WALK -> {updated_at or '', '', job id...}\n"
    "-- Each level's per-queue due sets are merged in (time, id) order and taken\n"
    "-- while the queue has room: its limit in this claim, its global limit less\n"
    "-- its running jobs (counted over the lease set), its rate limit less the\n"
    "-- claims counted in its window's counter (qrate:<queue>:<window start>,\n"
    "-- which expires after the window). At most WALK entries are looked at.\n"
    "local WALK = tonumber(ARGV[#ARGV])\n"
    "local now, limit, owner = arg(), tonumber(arg()), arg()\n"
    "local lease = waited(arg(), arg())\n"
    "local qs, glob = {}, false\n"
    "for i = 1, tonumber(arg()) do\n"
    "  local x = { name = arg(), room = tonumber(arg()), glob = tonumber(arg()), rate = tonumber(arg()),\n"
    "    win = arg(), ttl = arg(), took = 0 }\n"
    "  qs[i] = x\n"
    "  if x.glob > 0 then glob = true end\n"
    "end\n"
    "local conds = read_scope()\n"
    "-- The per-queue due sets of a store written by an older version are being\n"
    "-- built (CHR_RS_QBUILD): nothing is taken until they are.\n"
    "if redis.call('EXISTS', P .. ':qready') == 0 then return { '', '' } end\n"
    "if glob then\n"
    "  local running = {}\n"
    "  local function tally(ids)\n"
    "    for _, id in ipairs(ids) do\n"
    "      local v = redis.pcall('HMGET', jkey(id), 'status', 'x:queue')\n"
    "      if not v.err and v[1] == 'running' then\n"
    "        local name = qname(v[2])\n"
    "        running[name] = (running[name] or 0) + 1\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  tally(redis.call('ZRANGE', LEASE, 0, -1))\n"
    "  tally(redis.call('SMEMBERS', STK.running))\n"
    "  for _, x in ipairs(qs) do\n"
    "    if x.glob > 0 then x.room = math.min(x.room, x.glob - (running[x.name] or 0)) end\n"
    "  end\n"
    "end\n"
    "for _, x in ipairs(qs) do\n"
    "  if x.rate > 0 then\n"
    "    x.rkey = P .. ':qrate:' .. x.name .. ':' .. x.win\n"
    "    x.room = math.min(x.room, x.rate - tonumber(redis.call('GET', x.rkey) or '0'))\n"
    "  end\n"
    "end\n"
    "idx()\n"
    "local tnow, meta = tonumber(now), #conds > 0\n"
    "local out, n, st, seen = { '', '' }, 0, nil, 0\n"
    "for _, p in ipairs(levels_desc()) do\n"
    "  if n >= limit or seen >= WALK then break end\n"
    "  local src = {}\n"
    "  for _, x in ipairs(qs) do\n"
    "    if x.room > 0 then src[#src + 1] = { x = x, key = qdue_key(x.name, p), r = {}, pos = 1, skip = 0 } end\n"
    "  end\n"
    "  while n < limit and seen < WALK do\n"
    "    local bi, bid, bsc\n"
    "    for i, b in ipairs(src) do\n"
    "      if b.x.room > 0 then\n"
    "        if b.pos > #b.r and not b.done then\n"
    "          qflush() -- offsets count the entries left in place only\n"
    "          local want = math.min(math.max(math.min(b.x.room, limit - n), 16), WALK - seen)\n"
    "          b.r = redis.call('ZRANGEBYSCORE', b.key, '-inf', now, 'WITHSCORES', 'LIMIT', b.skip, want)\n"
    "          b.pos, b.done = 1, #b.r < 2 * want\n"
    "        end\n"
    "        if b.pos <= #b.r then\n"
    "          local id, sc = b.r[b.pos], tonumber(b.r[b.pos + 1])\n"
    "          if not bi or sc < bsc or (sc == bsc and before(id, bid)) then bi, bid, bsc = i, id, sc end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if not bi then break end\n"
    "    local b = src[bi]\n"
    "    b.pos = b.pos + 2\n"
    "    seen = seen + 1\n"
    "    local ok, o = pcall(state, jkey(bid), meta)\n"
    "    if not ok or not o or o.s ~= 'scheduled' or not o.t or (o.p or '5') ~= p or qname(o.q) ~= b.x.name then\n"
    "      q('ZREM', b.key, bid) -- stale (see qdue_key)\n"
    "    elseif tonumber(o.t) <= tnow and (not meta or matches(conds, o.m or false)) then\n"
    "      if not st then st = fmt(stamps(1)) end\n"
    "      redis.call('HSET', jkey(bid), 'status', 'running', 'claimed_by', owner, 'lease_until', lease,\n"
    "        'updated_at', st)\n"
    "      reindex(bid, o, { s = 'running', t = o.t, p = o.p, l = lease, c = owner, q = o.q, iv = o.iv })\n"
    "      n = n + 1\n"
    "      out[n + 2] = bid\n"
    "      b.x.room, b.x.took = b.x.room - 1, b.x.took + 1\n"
    "    else\n"
    "      b.skip = b.skip + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "qflush()\n"
    "for _, x in ipairs(qs) do\n"
    "  if x.rkey and x.took > 0 then\n"
    "    redis.call('INCRBY', x.rkey, x.took)\n"
    "    redis.call('PEXPIRE', x.rkey, x.ttl)\n"
    "  end\n"
    "end\n"
    "out[1] = st or ''\n"
    "return out\n",
    /* CHR_RS_QBUILD */
    CHR_REDIS_PRELUDE
    "-- Puts the scheduled jobs of a store written before per-queue due sets\n"
    "-- existed into them, a slice per call: cursor, count -> next cursor ('0':\n"
    "-- done, qready set). Writes keep the sets from the first call on.\n"
    "local cursor, count = arg(), arg()\n"
    "if cursor == '0' and redis.call('EXISTS', P .. ':qready') == 1 then return '0' end\n"
    "local r = redis.call('ZSCAN', JOBS, cursor, 'COUNT', count)\n"
    "local ids = r[2]\n"
    "for i = 1, #ids, 2 do\n"
    "  local ok, o = pcall(state, jkey(ids[i]))\n"
    "  if ok and o and o.s == 'scheduled' and o.t then q('ZADD', qdue_key(qname(o.q), o.p or '5'), o.t, ids[i]) end\n"
    "end\n"
    "qflush()\n"
    "if r[1] == '0' then redis.call('SET', P .. ':qready', '1') end\n"
    "return r[1]\n",
    0};

#endif
