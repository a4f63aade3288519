-- The fuzz smoke: every libFuzzer target of fuzz/ (built by `make
-- fuzz-build` with clang, AddressSanitizer and UndefinedBehaviorSanitizer)
-- runs a few seconds on its seed corpus, regression inputs included. A
-- crash, a sanitizer report, a broken invariant, a leak or a hang fails
-- the target's case with the path of the input that caused it. New inputs
-- go to a folder of this run: the corpus in the repository is only read.
-- `make fuzz` runs the same targets for longer (docs/reliability.md).
local U = require "support.util"

local ROOT, BUILD, sh_quote, capture = U.ROOT, U.BUILD, U.sh_quote, U.capture
local SECONDS = tonumber(os.getenv("FUZZ_SMOKE_SECONDS") or "") or 3

-- The processes this spec starts carry their own sanitizer runtime (the
-- clang one): none preloaded by spec/run.sh, nor its options.
local CLEAN_ENV = "env -u LD_PRELOAD -u MAKEFLAGS -u MAKELEVEL -u MFLAGS "

local targets = {}
for name in capture("cd " .. sh_quote(ROOT) .. " && ls fuzz/*.c"):gmatch("fuzz/([%w_]+)%.c") do
  targets[#targets + 1] = name
end

-- The first line of a libFuzzer log that says what went wrong.
local function reason(log)
  for line in log:gmatch("[^\n]+") do
    if line:find("ERROR: ", 1, true) or line:find("runtime error", 1, true) or
        line:find("invariant broken", 1, true) or line:find("Timeout", 1, true) then
      return line
    end
  end
  return log:sub(-2000)
end

describe("fuzz smoke", function()
  local dir, built, build_log

  lazy_setup(function()
    dir = U.tmpdir("chronis-fuzz")
    build_log, built = capture(("cd %s && %s make -j2 fuzz-build CI=true 2>&1")
      :format(sh_quote(ROOT), CLEAN_ENV))
  end)

  lazy_teardown(function()
    if dir then U.remove_tree(dir) end
  end)

  it("has a target and a seed corpus for every parser", function()
    assert.are.same({ "cron", "filters", "json", "redis_reply", "request", "time_iso", "tzif", "url" },
      targets)
    for _, t in ipairs(targets) do
      local n = tonumber((capture("ls " .. sh_quote(ROOT .. "/fuzz/corpus/" .. t) .. " | wc -l")))
      assert.is_true(n and n > 0, "fuzz/corpus/" .. t .. " is empty")
    end
  end)

  for _, t in ipairs(targets) do
    it(("%s runs %ds on its corpus without a crash"):format(t, SECONDS), function()
      assert(built, "make fuzz-build failed:\n" .. build_log:sub(-3000))
      local new, artifacts = dir .. "/" .. t, dir .. "/" .. t .. "-"
      assert.is_true(U.sh("mkdir -p " .. sh_quote(new)))
      local log, ok = capture(("cd %s && %s ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "
          .. "%s -max_total_time=%d -runs=1000000 -timeout=10 -artifact_prefix=%s "
          .. "%s fuzz/corpus/%s 2>&1")
        :format(sh_quote(ROOT), CLEAN_ENV, sh_quote(BUILD .. "/fuzz/bin/" .. t), SECONDS, sh_quote(artifacts), sh_quote(new), t))
      if not ok then
        local input = log:match("Test unit written to ([^\n]+)") or "(none saved)"
        error(("fuzz target %s failed on input %s: %s"):format(t, input, reason(log)), 0)
      end
      assert.matches("Done %d+ runs", log)
    end)
  end
end)
