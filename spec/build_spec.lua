-- The build on a machine that has never built chronis: make installs the
-- packages before it asks pkg-config or compiles anything, and stops with
-- one line when they cannot be installed. The machine is simulated: a copy
-- of the build files runs with stand-ins for dpkg-query, apt-get and
-- pkg-config on PATH, which see no package until apt-get "installs" them
-- all (the real headers and pkg-config answer from then on). Nothing is
-- installed on the real machine.
local U = require "support.util"

local shell_quote, capture, write, exists, ROOT = U.sh_quote, U.capture, U.write, U.exists, U.ROOT
local function read(path) return U.read(path, "") end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local REAL_PKG_CONFIG = capture("command -v pkg-config"):gsub("%s+$", "")

describe("build on a fresh machine", function()
  local dir, src, bin

  before_each(function()
    dir = U.tmpdir("chronis-build")
    src, bin = dir .. "/src", dir .. "/bin"
    assert.is_true(os.execute(("mkdir -p %s/spec/node_modules %s && cd %s && cp -r Makefile tools scripts runtime adapters %s/ && cp spec/core_test.c %s/spec/")
      :format(shell_quote(src), shell_quote(bin), shell_quote(ROOT), shell_quote(src), shell_quote(src))))
    -- The spec servers count as installed (npm is not simulated).
    write(src .. "/spec/package-lock.json", "{}\n")
    os.execute("sleep 0.01")
    write(src .. "/spec/node_modules/.package-lock.json", "{}\n")
    os.execute("touch -d '1 minute ago' " .. shell_quote(src .. "/spec/package-lock.json"))
    local d = shell_quote(dir)
    write(bin .. "/dpkg-query", ([[#!/bin/sh
[ -e %s/installed ] || exit 1
printf 'install ok installed'
]]):format(d), "755")
    -- apt-get fails as without network when the file "offline" exists:
    -- update warns and succeeds, install finds no package.
    write(bin .. "/apt-get", ([[#!/bin/sh
echo "$*" >>%s/apt.log
if [ -e %s/offline ]; then
  case " $* " in
  *" update "*)
    echo "W: Failed to fetch http://mirror.invalid/dists/InRelease  Temporary failure resolving 'mirror.invalid'"
    echo "W: Some index files failed to download. They have been ignored, or old ones used instead."
    exit 0 ;;
  esac
  echo "E: Unable to locate package liblua5.4-dev"
  exit 100
fi
case " $* " in *" install "*) touch %s/installed ;; esac
]]):format(d, d, d), "755")
    write(bin .. "/pkg-config", ([[#!/bin/sh
[ -e %s/installed ] && exec %s "$@"
echo "Package $1 was not found in the pkg-config search path." >&2
exit 1
]]):format(d, shell_quote(REAL_PKG_CONFIG)), "755")
    write(bin .. "/id", "#!/bin/sh\necho 0\n", "755")
  end)

  after_each(function()
    U.remove_tree(dir)
  end)

  -- Runs a command in the copy with the stand-ins first on PATH and
  -- nothing inherited from a make that runs the specs. Returns the exit
  -- status, stdout, stderr.
  local function sh(cmd, path)
    local out, err = dir .. "/out", dir .. "/err"
    local full = ("cd %s && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SANITIZER -u LD_PRELOAD PATH=%s %s >%s 2>%s; echo $?")
      :format(shell_quote(src), shell_quote(path or (bin .. ":" .. os.getenv("PATH"))), cmd,
        shell_quote(out), shell_quote(err))
    local rc = tonumber((capture(full):gsub("%s+$", "")))
    return rc, read(out), read(err)
  end

  it("installs the packages before the first compile, which then finds the Lua headers", function()
    local rc, out, err = sh("make build/obj/runtime/net/crypto.o")
    assert.are.equal(0, rc, out .. err)
    assert.truthy(read(dir .. "/apt.log"):match("install .*liblua5%.4%-dev"))
    assert.truthy(exists(src .. "/build/obj/runtime/net/crypto.o"))
    assert.truthy(out:find("-I/usr/include/lua5.4", 1, true), out)
  end)

  it("stops with one line naming the packages when they cannot be installed, before compiling", function()
    write(dir .. "/offline", "")
    local rc, out, err = sh("make all")
    assert.are_not.equal(0, rc)
    local errs = lines(err)
    assert.are.equal(1, #errs, err)
    assert.truthy(errs[1]:find("install them by hand: apt-get install ", 1, true), err)
    assert.truthy(errs[1]:find("liblua5.4-dev", 1, true), err)
    assert.truthy(errs[1]:find("Unable to locate package", 1, true), err)
    assert.truthy(errs[1]:find("could not be fetched: Temporary failure resolving", 1, true), err)
    assert.is_nil(out:find("cc ", 1, true), out)
    assert.is_false(exists(src .. "/build/obj"))
  end)

  it("tries the installation again on the next run after a failed one", function()
    write(dir .. "/offline", "")
    assert.are_not.equal(0, (sh("make all")))
    os.remove(dir .. "/offline")
    local rc, out, err = sh("make build/obj/runtime/net/crypto.o")
    assert.are.equal(0, rc, out .. err)
    assert.truthy(exists(src .. "/build/obj/runtime/net/crypto.o"))
  end)

  it("make run installs what running needs, make test also the test tools and servers", function()
    -- -n shows the goals' commands without running them; make still
    -- remakes its configuration, which installs.
    local rc, out, err = sh("make -n run")
    assert.are.equal(0, rc, out .. err)
    local log = read(dir .. "/apt.log")
    assert.truthy(log:match("install .*liblua5%.4%-dev"), log)
    assert.truthy(log:match("install .*tzdata"), log)
    assert.is_nil(log:find("postgresql", 1, true), log)
    assert.is_nil(log:find("lua-busted", 1, true), log)

    os.remove(dir .. "/installed")
    os.remove(dir .. "/apt.log")
    U.remove_tree(src .. "/build")
    rc, out, err = sh("make -n test")
    assert.are.equal(0, rc, out .. err)
    log = read(dir .. "/apt.log")
    for _, p in ipairs { "liblua5.4-dev", "lua-busted", "lua-cjson", "postgresql", "redis-server" } do
      assert.truthy(log:find(p, 1, true), p .. " in " .. log)
    end
  end)

  it("make clean installs nothing and asks pkg-config nothing", function()
    write(dir .. "/offline", "")
    local rc, out, err = sh("make clean")
    assert.are.equal(0, rc, out .. err)
    assert.are.equal("", read(dir .. "/apt.log"))
  end)

  it("deps says one line, or nothing with --quiet, when everything is present", function()
    write(dir .. "/installed", "")
    local rc, out, err = sh("sh tools/deps.sh")
    assert.are.equal(0, rc, out .. err)
    assert.are.equal("deps: all packages present\n", out)
    assert.are.equal("", err)
    rc, out, err = sh("sh tools/deps.sh --quiet run")
    assert.are.equal(0, rc, out .. err)
    assert.are.equal("", out .. err)
    assert.are.equal("", read(dir .. "/apt.log"))
  end)

  it("deps names the packages in one line when it is not root and there is no sudo", function()
    -- A PATH of the few commands deps.sh uses, and no sudo.
    local path = dir .. "/minbin"
    os.execute("mkdir -p " .. shell_quote(path))
    for _, c in ipairs { "dirname", "grep", "mktemp", "rm", "tr", "cut" } do
      local real = capture("command -v " .. c):gsub("%s+$", "")
      os.execute(("ln -s %s %s/%s"):format(shell_quote(real), shell_quote(path), c))
    end
    os.execute(("cp %s/dpkg-query %s/apt-get %s/"):format(shell_quote(bin), shell_quote(bin), shell_quote(path)))
    write(path .. "/id", "#!/bin/sh\necho 1000\n", "755")
    local rc, out, err = sh("/bin/sh tools/deps.sh run", path)
    assert.are.equal(1, rc, out .. err)
    assert.are.equal("", out)
    local errs = lines(err)
    assert.are.equal(1, #errs, err)
    assert.truthy(errs[1]:find("not root, and no sudo", 1, true), err)
    assert.truthy(errs[1]:find("apt-get install build-essential pkg-config liblua5.4-dev", 1, true), err)
    assert.are.equal("", read(dir .. "/apt.log"))
  end)
end)
