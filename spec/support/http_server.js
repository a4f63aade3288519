// A small HTTP(S) server for spec/http_spec.lua and the DynamoDB error
// specs. Listens on free loopback ports and prints one JSON line:
// {"http": PORT, "https": PORT|null, "pid": PID}. Exits when its parent (the busted
// process) goes away, so a crashed spec never leaves it behind.
//
//   node http_server.js [KEY.pem CERT.pem]
//
// Routes:
//   GET  /hello            200 "hello", X-Test: yes, X-Multi twice
//   ANY  /echo             201, JSON {method, url, headers, body}
//   GET  /status/N         status N, body "status N"
//   GET  /slow?ms=N        answers after N ms
//   GET  /redirect         302 to /hello
//   GET  /big?n=N          N bytes of "x"
//   GET  /connections      number of TCP connections accepted so far
//   GET  /headers-only     204, an empty header value and a folded header
//   POST /throttle/KEY/N   DynamoDB's ThrottlingException for the first N
//                          requests of KEY, then {} (an empty GetItem answer)
//   POST /dynamo-error/T   400 with DynamoDB error type T
'use strict'
const http = require('http')
const https = require('https')
const fs = require('fs')

let connections = 0
const throttled = new Map()

function handler (req, res) {
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8')
    const url = new URL(req.url, 'http://127.0.0.1')
    const parts = url.pathname.split('/').filter(Boolean)
    if (url.pathname === '/hello') {
      res.setHeader('X-Test', 'yes')
      res.setHeader('X-Multi', ['a', 'b'])
      res.setHeader('Content-Type', 'text/plain')
      res.end('hello')
    } else if (url.pathname === '/echo') {
      res.writeHead(201, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }))
    } else if (parts[0] === 'status') {
      res.writeHead(Number(parts[1]))
      res.end('status ' + parts[1])
    } else if (url.pathname === '/slow') {
      const t = setTimeout(() => res.end('slow'), Number(url.searchParams.get('ms') || 1000))
      res.on('close', () => clearTimeout(t))
    } else if (url.pathname === '/redirect') {
      res.writeHead(302, { Location: '/hello' })
      res.end()
    } else if (url.pathname === '/big') {
      res.end('x'.repeat(Number(url.searchParams.get('n') || 0)))
    } else if (url.pathname === '/connections') {
      res.end(String(connections))
    } else if (url.pathname === '/headers-only') {
      // Node refuses folded values; write the raw response instead.
      res.socket.write('HTTP/1.1 204 No Content\r\nX-Empty: \r\nX-Folded: one\r\n  two\r\n' +
        'Content-Length: 0\r\n\r\n')
      res.socket.end()
    } else if (parts[0] === 'throttle') {
      const seen = (throttled.get(parts[1]) || 0) + 1
      throttled.set(parts[1], seen)
      res.setHeader('Content-Type', 'application/x-amz-json-1.0')
      if (seen <= Number(parts[2])) {
        res.writeHead(400)
        res.end(JSON.stringify({ __type: 'com.amazonaws.dynamodb.v20120810#ThrottlingException',
          message: 'Rate of requests exceeds the allowed throughput.' }))
      } else {
        res.end(JSON.stringify({ seen }))
      }
    } else if (parts[0] === 'dynamo-error') {
      res.writeHead(400, { 'Content-Type': 'application/x-amz-json-1.0' })
      res.end(JSON.stringify({ __type: 'com.amazonaws.dynamodb.v20120810#' + parts[1],
        message: 'fake ' + parts[1] }))
    } else {
      res.writeHead(404)
      res.end('not found')
    }
  })
}

function listen (server) {
  server.on('connection', () => { connections++ })
  server.keepAliveTimeout = 30000
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)))
}

async function main () {
  const ports = { http: await listen(http.createServer(handler)), https: null }
  const [key, cert] = process.argv.slice(2)
  if (key && cert) {
    ports.https = await listen(https.createServer({
      key: fs.readFileSync(key), cert: fs.readFileSync(cert),
    }, handler))
  }
  ports.pid = process.pid
  process.stdout.write(JSON.stringify(ports) + '\n')
  const parent = process.ppid
  setInterval(() => { if (process.ppid !== parent) process.exit(0) }, 300)
}

main()
