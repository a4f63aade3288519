-- Engine semantics: queues (docs/engine.md), run on every store by
-- engine_contract.lua as (name, factory, opts).
return function(name, factory, opts) -- luacheck: no unused args
end
