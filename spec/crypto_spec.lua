-- chronis.crypto against published test vectors (FIPS 180-2 for SHA-256,
-- RFC 4231 for HMAC-SHA-256).
local chronis = require "chronis"
local crypto = chronis.crypto

local function unhex(s)
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

describe("chronis.crypto", function()
  it("sha256_hex matches the FIPS 180-2 examples", function()
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", crypto.sha256_hex(""))
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", crypto.sha256_hex("abc"))
    assert.are.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      crypto.sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.are.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      crypto.sha256_hex(("a"):rep(1000000)))
  end)

  it("sha256 returns the 32 raw bytes, and hex encodes them", function()
    local raw = crypto.sha256("abc")
    assert.are.equal(32, #raw)
    assert.are.equal(crypto.sha256_hex("abc"), crypto.hex(raw))
  end)

  it("hashes binary data with embedded zeros", function()
    assert.are.equal("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", crypto.sha256_hex("\0"))
  end)

  it("hmac_sha256 matches RFC 4231 test cases 1, 2, 3, 6 and 7", function()
    local cases = {
      { ("\x0b"):rep(20), "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
      { "Jefe", "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
      { ("\xaa"):rep(20), ("\xdd"):rep(50), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
      { ("\xaa"):rep(131), "Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
      { ("\xaa"):rep(131), "This is a test using a larger than block-size key and a larger than block-size data. "
        .. "The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
    }
    for i, c in ipairs(cases) do
      local mac = crypto.hmac_sha256(c[1], c[2])
      assert.are.equal(32, #mac, "case " .. i)
      assert.are.equal(unhex(c[3]), mac, "case " .. i)
      assert.are.equal(c[3], crypto.hmac_sha256_hex(c[1], c[2]), "case " .. i)
    end
  end)

  it("accepts an empty key and an empty message", function()
    assert.are.equal("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
      crypto.hmac_sha256_hex("", ""))
  end)

  it("compares strings with equal()", function()
    assert.is_true(crypto.equal("abc", "abc"))
    assert.is_false(crypto.equal("abc", "abd"))
    assert.is_false(crypto.equal("abc", "ab"))
    assert.is_true(crypto.equal("", ""))
  end)

  it("returns random bytes", function()
    local a, b = crypto.random_bytes(16), crypto.random_bytes(16)
    assert.are.equal(16, #a)
    assert.are_not.equal(a, b)
    assert.are.equal("", crypto.random_bytes(0))
  end)

  it("raises on non-string arguments", function()
    assert.has_error(function() crypto.sha256_hex({}) end)
    assert.has_error(function() crypto.hmac_sha256("k") end)
  end)
end)
