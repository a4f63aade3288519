-- busted output handler: a mark per test, the details of every failure,
-- error and pending test, then one line "N passed, N failed". Errors and
-- pending tests count as failed: nothing is allowed to be skipped silently.
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.base")()
  local pretty = require "pl.pretty"

  local function describe(item, kind)
    local where = ""
    if item.element and item.element.trace and item.element.trace.short_src then
      where = item.element.trace.short_src .. ":" .. item.element.trace.currentline
    elseif item.trace and item.trace.short_src then
      where = item.trace.short_src .. ":" .. item.trace.currentline
    end
    local msg = item.message
    if type(msg) ~= "string" then msg = msg == nil and "(no message)" or pretty.write(msg) end
    local s = ("%s %s\n  %s\n  %s"):format(kind, where, item.name or "?", msg:gsub("\n", "\n  "))
    if options.verbose and item.trace and item.trace.traceback then
      s = s .. "\n" .. item.trace.traceback
    end
    return s
  end

  handler.testEnd = function(element, parent, status)
    local mark = ({ success = "+", failure = "F", error = "E", pending = "P" })[status] or "?"
    io.write(mark)
    io.flush()
    return nil, true
  end

  handler.suiteEnd = function()
    io.write("\n")
    for _, p in ipairs(handler.pendings) do io.write(describe(p, "PENDING"), "\n") end
    for _, f in ipairs(handler.failures) do io.write(describe(f, "FAILED"), "\n") end
    for _, e in ipairs(handler.errors) do io.write(describe(e, "ERROR"), "\n") end
    local failed = handler.failuresCount + handler.errorsCount + handler.pendingsCount
    io.write(("%d passed, %d failed\n"):format(handler.successesCount, failed))
    io.flush()
    return nil, true
  end

  busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ "suite", "end" }, handler.suiteEnd)
  return handler
end
