-- Loaded by busted before every spec file (see spec/run.sh): makes the
-- repo's Lua library and the built C module reachable whatever the
-- working folder, so specs only `require "chronis"`.
local root = debug.getinfo(1, "S").source:match("^@(.*)spec/support/helper%.lua$") or "./"
if root == "" then root = "./" end
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. root .. "spec/?.lua;" .. package.path
-- CHRONIS_BUILD points at another build folder (e.g. a sanitizer build).
local build = os.getenv("CHRONIS_BUILD") or (root .. "build")
package.cpath = build .. "/lua/?.so;" .. package.cpath
