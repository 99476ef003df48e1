'use strict'
// Catch-up between two ssb-server 16.0.1 instances on loopback, by EBT.
//
//   node benchmarks/ssb/catchup.js [--messages 10000] [--rounds 3] [--timeout 300] [--serve 1]
//
// A publishes `messages` posts (not timed). Each round starts a fresh, empty B in its
// own process and ssb path, which follows A, then dials A; timed in B from the dial
// (connect and secret handshake included) until B holds A's last message (appended to
// its log), and until B's indexes hold it too. Each instance is a process of its own;
// both listen on 127.0.0.1 with a network key (shs cap) made for this run. Prints one
// JSON object on stdout. With --serve 1 (for interleaving with another benchmark): prints
// one JSON line once A has published, then runs a round for each line read on stdin and
// prints its JSON line; stops at the end of stdin.

const { fork } = require('child_process')
const crypto = require('crypto')
const fs = require('fs')
const net = require('net')
const os = require('os')
const path = require('path')

// The text of a moment in benchmarks/replication.py, so both carry the same words.
const TEXT = 'A moment worth sharing: the ice cream, the beach, the launch went well. '.repeat(2)

function args () {
  const out = { messages: 10000, rounds: 3, timeout: 300, serve: 0 }
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '')
    if (!(key in out)) throw new Error(`unknown option ${argv[i]}`)
    out[key] = Number(argv[i + 1])
  }
  return out
}

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

class Peer {
  constructor (name, root, shs, port) {
    this.name = name
    this.waiting = new Map()
    this.child = fork(path.join(__dirname, 'peer.js'), [], {
      env: Object.assign({}, process.env, {
        SSB_PEER: JSON.stringify({ path: path.join(root, name), port, shs })
      }),
      stdio: ['ignore', 'ignore', 'inherit', 'ipc']
    })
    this.exited = new Promise((resolve) => this.child.on('exit', resolve))
    this.child.on('message', (msg) => {
      const waiter = this.waiting.get(msg.cmd)
      if (!waiter) return
      this.waiting.delete(msg.cmd)
      if (msg.error) waiter.reject(new Error(`${this.name} ${msg.cmd}: ${msg.error}`))
      else waiter.resolve(msg)
    })
    this.child.on('exit', (code) => {
      for (const [cmd, waiter] of this.waiting) {
        waiter.reject(new Error(`${this.name} exited (${code}) during ${cmd}`))
      }
      this.waiting.clear()
    })
  }

  call (cmd, fields = {}, timeout = 600) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(cmd)
        reject(new Error(`${this.name} ${cmd}: no answer after ${timeout} s`))
      }, timeout * 1000)
      this.waiting.set(cmd, {
        resolve: (v) => { clearTimeout(timer); resolve(v) },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
      if (cmd !== 'ready') this.child.send(Object.assign({ cmd }, fields))
    })
  }

  async close () {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    if (this.child.connected) this.child.send({ cmd: 'close' })
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10000) // by its pid
    await this.exited
    clearTimeout(timer)
  }
}

function median (xs) {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

async function main () {
  const opts = args()
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ssb-bench-'))
  const shs = crypto.randomBytes(32).toString('base64') // a network of this run alone
  const peers = []
  const cleanup = async () => {
    for (const p of peers) await p.close()
    fs.rmSync(root, { recursive: true, force: true })
  }
  process.once('SIGTERM', () => cleanup().finally(() => process.exit(143)))
  try {
    const a = new Peer('a', root, shs, await freePort())
    peers.push(a)
    const ready = await a.call('ready', {}, 120)
    const published = await a.call('publish', { n: opts.messages, text: TEXT })
    const about = {
      ssb_server: require('ssb-server/package.json').version,
      ebt: require('ssb-ebt/package.json').version,
      node: process.version,
      messages: opts.messages,
      message_bytes: published.bytes / opts.messages, // the signed JSON, as hashed
      publish_seconds: published.seconds
    }
    let made = 0
    const round = async () => {
      const b = new Peer(`b${made++}`, root, shs, await freePort())
      peers.push(b)
      await b.call('ready', {}, 120)
      await b.call('follow', { id: ready.id })
      const before = await a.call('cpu')
      const took = await b.call(
        'catchup',
        { address: ready.address, id: ready.id, n: opts.messages, timeout: opts.timeout },
        opts.timeout + 30
      )
      delete took.cmd
      took.sender_cpu_seconds = (await a.call('cpu')).seconds - before.seconds // A, same span
      await b.close()
      fs.rmSync(path.join(root, b.name), { recursive: true, force: true })
      return took
    }
    if (opts.serve) {
      process.stdout.write(JSON.stringify(about) + '\n')
      const lines = require('readline').createInterface({ input: process.stdin })
      for await (const line of lines) {
        if (!line.trim()) continue
        process.stdout.write(JSON.stringify(await round()) + '\n')
      }
      return
    }
    const rounds = []
    for (let r = 0; r < opts.rounds; r++) rounds.push(await round())
    const held = median(rounds.map((r) => r.held_seconds))
    process.stdout.write(JSON.stringify(Object.assign({
      figure: `ssb-server ${about.ssb_server} catch-up by EBT, ${opts.messages} messages, loopback`
    }, about, {
      rounds,
      seconds: held,
      messages_per_second: opts.messages / held,
      indexed_seconds: median(rounds.map((r) => r.indexed_seconds))
    })) + '\n')
  } finally {
    await cleanup()
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err)
  process.exitCode = 1
})
