// A TCP proxy for the fault-injection suite (spec/support/chaos.lua): sits
// between the worker processes and a PostgreSQL or Redis server and, on
// command, slows, cuts, refuses or blackholes their connections.
//
//   node chaos_proxy.js LISTEN_PORT TARGET_PORT
//
// Commands, one per line on standard input:
//   delay MS       every chunk, both ways, is held MS ms (0: none); order kept
//   cut            resets every open connection (both sides)
//   refuse 1|0     new connections are reset at once / accepted again
//   blackhole 1|0  nothing is forwarded (held, as a network that drops
//                  packets); 0 delivers what was held, as TCP would once
//                  the network heals
// Prints "listening PORT pid PID" once ready. Exits when standard input closes, so
// it never outlives the driver.
'use strict'
const net = require('net')

const listenPort = Number(process.argv[2])
const targetPort = Number(process.argv[3])
let delay = 0
let refuse = false
let blackhole = false
const pairs = new Set()

// One direction of a connection: chunks go out in order, each no sooner
// than `delay` after it arrived, and none while the blackhole is on.
function pipe (from, to, pair) {
  const queue = []
  let timer = null
  function pump () {
    timer = null
    while (queue.length > 0 && !blackhole) {
      const wait = queue[0].at - Date.now()
      if (wait > 0) {
        timer = setTimeout(pump, wait)
        return
      }
      if (!to.destroyed) to.write(queue.shift().data)
      else queue.shift()
    }
  }
  from.on('data', (data) => {
    queue.push({ data, at: Date.now() + delay })
    if (!timer) pump()
  })
  pair.pumps.push(() => { if (!timer) pump() })
}

function reset (sock) {
  if (sock.destroyed) return
  if (typeof sock.resetAndDestroy === 'function' && sock._handle) sock.resetAndDestroy()
  else sock.destroy()
}

const server = net.createServer((client) => {
  if (refuse) {
    reset(client)
    return
  }
  const upstream = net.connect({ host: '127.0.0.1', port: targetPort })
  const pair = { client, upstream, pumps: [] }
  pairs.add(pair)
  const close = () => {
    pairs.delete(pair)
    client.destroy()
    upstream.destroy()
  }
  client.on('error', close)
  upstream.on('error', close)
  client.on('close', close)
  upstream.on('close', close)
  pipe(client, upstream, pair)
  pipe(upstream, client, pair)
})

server.listen(listenPort, '127.0.0.1', () => {
  process.stdout.write(`listening ${listenPort} pid ${process.pid}\n`)
})
server.on('error', (e) => {
  process.stderr.write(`proxy: ${e.message}\n`)
  process.exit(1)
})

let input = ''
process.stdin.on('data', (d) => {
  input += d
  let nl
  while ((nl = input.indexOf('\n')) >= 0) {
    const [cmd, value] = input.slice(0, nl).trim().split(/\s+/)
    input = input.slice(nl + 1)
    if (cmd === 'delay') delay = Number(value) || 0
    else if (cmd === 'refuse') refuse = value === '1'
    else if (cmd === 'cut') {
      for (const p of pairs) {
        reset(p.client)
        reset(p.upstream)
      }
      pairs.clear()
    } else if (cmd === 'blackhole') {
      blackhole = value === '1'
      if (!blackhole) for (const p of pairs) for (const f of p.pumps) f()
    }
  }
})
process.stdin.on('end', () => process.exit(0))
// Other children of the driver may hold our standard input open: the
// driver's going away ends us too.
const parent = process.ppid
setInterval(() => { if (process.ppid !== parent) process.exit(0) }, 500).unref()
