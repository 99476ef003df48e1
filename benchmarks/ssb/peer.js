'use strict'
// One ssb-server 16.0.1 instance, driven by its parent (catchup.js) over Node's IPC
// channel. It loads the plugins `ssb-server start` loads (node_modules/ssb-server/bin.js)
// except those that reach beyond loopback or serve local clients: ssb-local (UDP
// broadcast on the LAN), ssb-onion (Tor), ssb-ws (a websocket listener), ssb-unix-socket
// and ssb-no-auth (the local CLI socket), ssb-plugins (user plugins) and ssb-logging.
// It listens on 127.0.0.1 only, with the network key (shs cap) the parent gives it.
//
// Messages from the parent: {cmd: 'publish', n, text} | {cmd: 'follow', id}
// | {cmd: 'catchup', address, id, n, timeout} | {cmd: 'cpu'} | {cmd: 'close'}; each is answered with
// {cmd, ...result} or {cmd, error}.

const path = require('path')
const ssbKeys = require('ssb-keys')
const ssbCaps = require('ssb-caps')
const setDefaults = require('ssb-config/defaults') // not ssb-config/inject: no rc files, no env

const opts = JSON.parse(process.env.SSB_PEER || '{}')
const config = setDefaults('ssb-bench', {
  path: opts.path,
  keys: ssbKeys.loadOrCreateSync(path.join(opts.path, 'secret')),
  caps: Object.assign({}, ssbCaps, { shs: opts.shs }),
  local: false,
  pub: false,
  logging: { level: 'error' },
  connections: {
    incoming: { net: [{ host: '127.0.0.1', port: opts.port, scope: 'device', transform: 'shs' }] },
    outgoing: { net: [{ transform: 'shs' }] }
  }
})

const createSsbServer = require('ssb-server')
  .use(require('ssb-private1'))
  .use(require('ssb-master'))
  .use(require('ssb-gossip'))
  .use(require('ssb-replicate'))
  .use(require('ssb-friends'))
  .use(require('ssb-blobs'))
  .use(require('ssb-invite'))
  .use(require('ssb-query'))
  .use(require('ssb-links'))
  .use(require('ssb-ebt'))
  .use(require('ssb-ooo'))
const sbot = createSsbServer(config)

const now = () => Number(process.hrtime.bigint()) / 1e9 // monotonic seconds

// Calls back once every index has caught up with the log (polled every 5 ms), so that
// no round starts while an instance is still indexing what it wrote before.
function whenIndexed (done) {
  if (sbot.status().sync.sync) done()
  else setTimeout(whenIndexed, 5, done)
}

function send (msg) {
  if (process.connected) process.send(msg)
}

// Posts 1..n, in batches: ssb-db signs each message as it is queued and writes its queue
// at most every 100 ms, so waiting for each publish would time that delay, not ssb.
function publish ({ n, text }, done) {
  const began = now()
  let bytes = 0
  let sent = 0
  const batch = () => {
    if (sent === n) {
      const seconds = now() - began
      return whenIndexed(() => done(null, { seconds, indexed_seconds: now() - began, bytes }))
    }
    const size = Math.min(500, n - sent)
    let left = size
    let failed = false
    for (let k = 0; k < size; k++) {
      sent += 1
      sbot.publish({ type: 'post', text: `${sent} ${text}` }, (err, msg) => {
        if (failed) return
        if (err) {
          failed = true
          return done(err)
        }
        bytes += JSON.stringify(msg.value, null, 2).length
        if (--left === 0) batch()
      })
    }
  }
  batch()
}

function follow ({ id }, done) {
  sbot.publish({ type: 'contact', contact: id, following: true }, (err) => {
    if (err) return done(err)
    // ssb-friends turns the follow into replicate.request(id), which ssb-ebt hooks;
    // ask directly too, so nothing waits on the friends graph being indexed.
    sbot.replicate.request(id, true)
    whenIndexed(() => done(null, {}))
  })
}

// From the call that dials (connect and secret handshake included) until this instance
// holds message n of feed `id` (appended to its log), then until every index has it.
function catchup ({ address, id, n, timeout }, done) {
  let held = null
  let connected = null
  const marks = [] // [sequence, seconds from the dial] at the 1st, 100th, each 1000th held
  let finished = false
  const began = now()
  const cpu = process.cpuUsage()
  const finish = (err, result) => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    done(err, result)
  }
  const timer = setTimeout(() => finish(new Error(`no message ${n} after ${timeout} s`)), timeout * 1000)
  const indexed = () => {
    if (finished) return
    const used = process.cpuUsage(cpu)
    const peers = sbot.ebt.peerStatus(id).peers
    finish(null, {
      connect_seconds: connected - began,
      held_seconds: held - began,
      indexed_seconds: now() - began,
      cpu_seconds: (used.user + used.system) / 1e6, // this process, dial to indexed
      ebt_peers: Object.keys(peers).length, // 1: the messages came by EBT
      marks
    })
  }
  sbot.post((msg) => {
    if (msg.value.author !== id) return
    const seq = msg.value.sequence
    if (seq === 1 || seq === 100 || seq % 1000 === 0) {
      marks.push([seq, Math.round((now() - began) * 1000) / 1000])
    }
    if (held === null && seq >= n) {
      held = now()
      whenIndexed(indexed)
    }
  })
  sbot.connect(address, (err) => {
    if (err) return finish(err)
    connected = now()
  })
}

// This process's CPU time so far (user + system), seconds.
function cpu (_, done) {
  const used = process.cpuUsage()
  done(null, { seconds: (used.user + used.system) / 1e6 })
}

const handlers = { publish, follow, catchup, cpu }

process.on('message', (msg) => {
  if (msg.cmd === 'close') {
    sbot.close(true, () => process.exit(0))
    return
  }
  handlers[msg.cmd](msg, (err, result) => {
    send(err ? { cmd: msg.cmd, error: String(err && err.stack) } : Object.assign({ cmd: msg.cmd }, result))
  })
})
process.on('disconnect', () => process.exit(0)) // the parent is gone

send({ cmd: 'ready', id: sbot.id, address: sbot.getAddress('device') || sbot.getAddress() })
