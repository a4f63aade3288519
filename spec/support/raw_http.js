// Sends raw bytes to an HTTP server and prints what came back, for specs
// that need what an HTTP client library would not send: malformed
// requests, pipelined ones, a client that trickles its request or stops.
//   node raw_http.js PORT < {"chunks": ["GET / HTTP/1.1\r\n", ...], "gap_ms": 0, "wait_ms": 2000}
// Prints {"data": "...", "closed": true|false} once the server closes the
// connection or wait_ms passed after the last chunk.
'use strict';
const net = require('net');

const port = Number(process.argv[2]);
let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const spec = JSON.parse(input);
  const sock = net.connect(port, '127.0.0.1');
  let data = '';
  let closed = false;
  let timer = null;
  const finish = () => {
    if (timer) clearTimeout(timer);
    process.stdout.write(JSON.stringify({ data, closed }));
    sock.destroy();
    process.exit(0);
  };
  sock.on('data', (d) => { data += d.toString('latin1'); });
  sock.on('close', () => { closed = true; finish(); });
  sock.on('error', () => { closed = true; finish(); });
  sock.on('connect', () => {
    const chunks = spec.chunks || [];
    let i = 0;
    const next = () => {
      if (i < chunks.length) {
        sock.write(Buffer.from(chunks[i++], 'latin1'));
        setTimeout(next, spec.gap_ms || 0);
      } else {
        timer = setTimeout(finish, spec.wait_ms || 2000);
      }
    };
    next();
  });
});
