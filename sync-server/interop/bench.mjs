#!/usr/bin/env node
// Benchmarks for an automerge-repo sync server (protocol v1), with the JavaScript client, in one
// run. Prints a markdown table on stdout (and the raw numbers as JSON with --json FILE).
//
//   node bench.mjs --url ws://127.0.0.1:PORT [--server-pid PID]                 (reference, no auth)
//   node bench.mjs --url ws://127.0.0.1:PORT/api/v1/sync --tokens T1,T2,... --server-pid PID
//
// (a) throughput: --clients (100) concurrent clients each create --docs-per-client (100) small
//     documents; the clock stops when fresh clients (one per token, nothing stored) have fetched
//     every document from the server and checked its content. docs/s = documents / that time.
// (b) latency: client A changes a document, client B observes the change; --changes (200) round
//     trips one after another; p50 / p99 / max.
// (c) server memory per loaded document: VmRSS of --server-pid (from /proc/PID/status) before and
//     after a client creates --memory-docs (1000) documents and a fresh client has fetched them
//     all (both clients stay connected), difference / documents. Needs --server-pid.
// (d) reconnect cost: a client holding --reconnect-docs (1000) documents, all synced and
//     unchanged, disconnects and reconnects; bytes it writes on the socket (CBOR frames as handed
//     to ws; and on the TCP socket, with WebSocket framing and the HTTP upgrade) until it has been
//     quiet for --quiet-ms (1000).
// (e) memory with many stored documents after eviction (not in the default --only a,b,c,d; run
//     with --only e): --clients (100) bare clients store --stored (100000) small documents, each
//     connection storing --stored-per-connection (20) and closing, so the server keeps few loaded
//     at a time. At each of --stored-samples (default 0, 10 %, 25 %, 50 %, 75 %, 100 % of
//     --stored) every client is closed, the bench waits until the server's eviction sweep reports
//     no document loaded (read from --server-log, the server's JSON log with
//     RUST_LOG=fitedge_server::sync::evict=debug; without it, --evict-wait-ms) and reads VmRSS of
//     --server-pid. Flat: VmRSS at the last sample within --flat-margin-pct (10) of VmRSS at the
//     first sample after 0. Then --stored-verify (200) documents spread over the whole range are
//     fetched back by a fresh client (loaded again from SQL) and checked.
// Every wait is bounded (--timeout-ms per wait, --total-timeout-ms overall); exit 1 on failure.
import { readFileSync, writeFileSync, statSync } from "node:fs"
import {
  HarnessError, parseArgs, makeClient, whenPeered, withTimeout, waitForDoc, sleep, redact, clientUrl,
  RawClient, findWithRetry,
} from "./lib.mjs"

const spec = {
  url: {}, tokens: {}, "server-pid": { number: true },
  clients: { number: true, default: 100 },
  "docs-per-client": { number: true, default: 100 },
  changes: { number: true, default: 200 },
  "memory-docs": { number: true, default: 1000 },
  "reconnect-docs": { number: true, default: 1000 },
  "quiet-ms": { number: true, default: 1000 },
  "fetch-concurrency": { number: true, default: 100 },
  creator: { default: "raw" },
  "in-flight": { number: true, default: 1 },
  "timeout-ms": { number: true, default: 60_000 },
  "total-timeout-ms": { number: true, default: 900_000 },
  only: { default: "a,b,c,d" },
  stored: { number: true, default: 100_000 },
  "stored-samples": {},
  "stored-per-connection": { number: true, default: 20 },
  "stored-verify": { number: true, default: 200 },
  "server-log": {},
  "server-db": {},
  "evict-wait-ms": { number: true, default: 30_000 },
  "flat-margin-pct": { number: true, default: 10 },
  json: {},
  label: { default: "" },
  "strip-undefined-metadata": { flag: true },
}

let opts
try {
  opts = parseArgs(process.argv.slice(2), spec)
  if (!opts.url) throw new HarnessError("--url is required")
} catch (e) {
  process.stderr.write(`usage error: ${e.message}\n`)
  process.exit(2)
}
const tokens = opts.tokens ? opts.tokens.split(",").filter(Boolean) : [undefined]
const T = opts["timeout-ms"]
const all = []
const log = msg => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`)

function client(token) {
  const c = makeClient(opts.url, token, { retryMs: 2000, stripUndefinedMetadata: !!opts["strip-undefined-metadata"] })
  all.push(c)
  return c
}

async function connected(token, what) {
  const c = client(token)
  await whenPeered(c.repo, T, `${what}: no peer message from the server`, c.adapter)
  return c
}

async function closeClients(cs) {
  await Promise.race([Promise.allSettled(cs.map(c => c.repo.shutdown())), sleep(5000)])
  for (const c of cs) all.splice(all.indexOf(c), 1)
}

function rssKiB(pid) {
  if (!pid) return null
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)\s+kB/m)
  if (!m) throw new HarnessError(`no VmRSS in /proc/${pid}/status`)
  return Number(m[1])
}

/** VmRSS, RssAnon, RssFile and VmHWM (peak) of `pid`, in KiB. */
function memStatus(pid) {
  const text = readFileSync(`/proc/${pid}/status`, "utf8")
  const get = k => {
    const m = text.match(new RegExp(`^${k}:\\s+(\\d+)\\s+kB`, "m"))
    if (!m) throw new HarnessError(`no ${k} in /proc/${pid}/status`)
    return Number(m[1])
  }
  return { rssKiB: get("VmRSS"), anonKiB: get("RssAnon"), fileKiB: get("RssFile"), hwmKiB: get("VmHWM") }
}

/**
 * Fetches every `{url, expect}` from a fresh bare client of `token` (RawClient: nothing stored,
 * starts from an empty document), `concurrency` requests in flight, checking `doc.v`. A document
 * the server does not hold yet answers doc-unavailable; the misses are asked again in a new round
 * on a new connection, until all are verified or --timeout-ms passes.
 */
async function verifyAll(token, docs, what) {
  const deadline = Date.now() + T
  let pending = docs
  let verified = 0
  for (let round = 1; pending.length > 0; round++) {
    if (Date.now() > deadline) {
      throw new HarnessError(`${what}: ${pending.length} of ${docs.length} documents still not served after ${T} ms (${round - 1} rounds)`)
    }
    const v = new RawClient(opts.url, token)
    await v.connect(T)
    const missed = []
    let i = 0
    const worker = async () => {
      while (i < pending.length) {
        const d = pending[i++]
        let r
        try {
          r = await v.fetch(d.url, doc => doc.v !== undefined, Math.max(1, deadline - Date.now()))
        } catch (e) {
          missed.push(d)
          continue
        }
        if (!r.available) { missed.push(d); continue }
        if (String(r.doc.v) !== d.expect) throw new HarnessError(`${what}: ${d.url} has v=${JSON.stringify(r.doc.v)}, expected ${d.expect}`)
        if (++verified % 2000 === 0) log(`${what}: ${verified} of ${docs.length} verified`)
      }
    }
    await Promise.all(Array.from({ length: Math.min(opts["fetch-concurrency"], pending.length) }, worker))
    v.close()
    if (missed.length > 0) {
      log(`${what}: round ${round}: ${missed.length} not yet served; asking again on a new connection`)
      await sleep(250)
    }
    pending = missed
  }
}

/** Client B of the latency test: a Repo that has found `url` (fresh Repos until the server has it). */
async function findingClient(token, url, what) {
  const first = await connected(token, what)
  const made = [first]
  const { handle, repo } = await findWithRetry(first.repo, async () => {
    const c = await connected(token, what)
    made.push(c)
    return c.repo
  }, url, T, what)
  const b = made.find(c => c.repo === repo)
  await closeClients(made.filter(c => c !== b))
  return { b, hb: handle }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN
  const idx = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)
  return sorted[Math.max(0, idx)]
}

const results = { url: redact(clientUrl(opts.url, tokens[0])), label: opts.label, startedAt: new Date().toISOString() }
if (opts["strip-undefined-metadata"]) results.diagnostic = "JS clients' join sent without undefined peerMetadata keys"

async function memory() {
  const pid = opts["server-pid"]
  if (!pid) {
    results.memory = { skipped: "no --server-pid" }
    return
  }
  const n = opts["memory-docs"]
  const token = tokens[0]
  const before = rssKiB(pid)
  const c = await connected(token, "memory creator")
  const docs = []
  for (let i = 0; i < n; i++) {
    const h = c.repo.create({ v: `m-${i}`, kind: "memory", i })
    docs.push({ url: h.url, expect: `m-${i}` })
    if (i % 50 === 0) await sleep(0)
  }
  await verifyAll(token, docs, "memory")
  await sleep(1000)
  const after = rssKiB(pid)
  results.memory = { docs: n, rssBeforeKiB: before, rssAfterKiB: after, bytesPerDoc: Math.round(((after - before) * 1024) / n) }
  log(`memory: RSS ${before} -> ${after} KiB for ${n} documents`)
  await closeClients([c])
}

async function latency() {
  const n = opts.changes
  const token = tokens[0]
  const a = await connected(token, "latency A")
  const h = a.repo.create({ v: "lat", i: 0 })
  // B finds it (fresh clients until the server holds it), then the round trips.
  const { b, hb } = await findingClient(token, h.url, "latency B")
  const samples = []
  const wire = []
  for (let i = 1; i <= n; i++) {
    let sentAt
    a.adapter.onSent = () => { sentAt ??= performance.now() }
    const t0 = performance.now()
    h.change(d => { d.i = i })
    await waitForDoc(hb, d => d.i === i, T, `latency: B sees change ${i}`)
    const t1 = performance.now()
    samples.push(t1 - t0)
    if (sentAt !== undefined) wire.push(t1 - sentAt)
  }
  a.adapter.onSent = null
  samples.sort((x, y) => x - y)
  wire.sort((x, y) => x - y)
  results.latency = {
    changes: n,
    p50ms: +percentile(samples, 50).toFixed(2),
    p99ms: +percentile(samples, 99).toFixed(2),
    maxms: +samples[samples.length - 1].toFixed(2),
    // From A's first socket write after the change to B seeing it: the JavaScript client holds a
    // change for up to 100 ms (automerge-repo's sync throttle) before it writes it.
    fromSendP50ms: +percentile(wire, 50).toFixed(2),
    fromSendP99ms: +percentile(wire, 99).toFixed(2),
  }
  log(`latency: p50 ${results.latency.p50ms} ms, p99 ${results.latency.p99ms} ms; from A's write p99 ${results.latency.fromSendP99ms} ms`)
  await closeClients([a, b])
}

async function throughput() {
  const nc = opts.clients
  const nd = opts["docs-per-client"]
  if (opts.creator === "raw") return throughputRaw()
  if (opts.creator !== "repo") throw new HarnessError(`--creator is raw or repo, not ${opts.creator}`)
  const cs = await Promise.all(Array.from({ length: nc }, (_, i) => connected(tokens[i % tokens.length], `client ${i}`)))
  const rssBefore = rssKiB(opts["server-pid"])
  log(`throughput: ${nc} clients connected; creating ${nc * nd} documents`)
  const t0 = performance.now()
  const byToken = new Map()
  await Promise.all(cs.map(async (c, ci) => {
    const token = tokens[ci % tokens.length]
    if (!byToken.has(token)) byToken.set(token, [])
    const list = byToken.get(token)
    for (let j = 0; j < nd; j++) {
      const v = `t-${ci}-${j}`
      const h = c.repo.create({ v, kind: "throughput", client: ci, j })
      list.push({ url: h.url, expect: v })
      if (j % 10 === 0) await sleep(0)
    }
  }))
  const tCreated = performance.now()
  log(`throughput: created in ${Math.round(tCreated - t0)} ms; fetching them back`)
  for (const [token, docs] of byToken) await verifyAll(token, docs, "throughput")
  const t1 = performance.now()
  const docs = nc * nd
  results.throughput = {
    creator: "repo", clients: nc, docsPerClient: nd, docs,
    createMs: Math.round(tCreated - t0),
    untilAllServedMs: Math.round(t1 - t0),
    docsPerSec: Math.round(docs / ((t1 - t0) / 1000)),
    rssBeforeKiB: rssBefore, rssAfterKiB: rssKiB(opts["server-pid"]),
  }
  log(`throughput: ${docs} documents served after ${results.throughput.untilAllServedMs} ms`)
  await closeClients(cs)
}

/**
 * Throughput with bare protocol clients (the default): the JavaScript Repo spends 3-5 ms of client
 * CPU per created document, so 100 Repos in one process measure the client, not the server. Each
 * client makes its documents with @automerge/automerge, sends each as a Repo would (`sync`) and
 * counts it once the server's reply carries its heads; then a fresh client fetches them all back.
 */
async function throughputRaw() {
  const nc = opts.clients
  const nd = opts["docs-per-client"]
  const A = await import("@automerge/automerge")
  // Documents are made before the clock starts (the server's work is what is timed) and before
  // connecting: making 10,000 blocks the event loop for long enough to miss keep-alive pings.
  const made = Array.from({ length: nc }, (_, ci) => Array.from({ length: nd }, (_, j) => ({ v: `t-${ci}-${j}`, doc: A.from({ v: `t-${ci}-${j}`, kind: "throughput", client: ci, j }) })))
  const cs = await Promise.all(Array.from({ length: nc }, async (_, i) => {
    const c = new RawClient(opts.url, tokens[i % tokens.length])
    await c.connect(T)
    return c
  }))
  const rssBefore = rssKiB(opts["server-pid"])
  log(`throughput: ${nc} bare clients connected; sending ${nc * nd} documents (${Math.min(opts["in-flight"], nd)} in flight per client)`)
  const t0 = performance.now()
  const byToken = new Map()
  let acked = 0
  await Promise.all(cs.map(async (c, ci) => {
    const token = tokens[ci % tokens.length]
    if (!byToken.has(token)) byToken.set(token, [])
    // A bounded window per client: with all 100 in flight the client's event loop stalls long
    // enough to miss the reference server's 5 s keep-alive ping, which then drops the socket.
    let next = 0
    const list = byToken.get(token)
    const worker = async () => {
      while (next < made[ci].length) {
        const m = made[ci][next++]
        try {
          list.push({ url: await c.push(m.doc, T), expect: m.v })
        } catch (e) {
          throw new HarnessError(`client ${ci}: ${e.message} (${acked} of ${nc * nd} documents acknowledged by then, after ${Math.round(performance.now() - t0)} ms)`)
        }
        if (++acked % 1000 === 0) log(`throughput: ${acked} acknowledged after ${Math.round(performance.now() - t0)} ms`)
      }
    }
    await Promise.all(Array.from({ length: Math.min(opts["in-flight"], nd) }, worker))
  }))
  const tAcked = performance.now()
  log(`throughput: the server acknowledged all after ${Math.round(tAcked - t0)} ms; fetching them back`)
  for (const [token, docs] of byToken) await verifyAll(token, docs, "throughput")
  const t1 = performance.now()
  const docs = nc * nd
  results.throughput = {
    creator: "raw", inFlight: Math.min(opts["in-flight"], nd), clients: nc, docsPerClient: nd, docs,
    ackedMs: Math.round(tAcked - t0),
    ackedDocsPerSec: Math.round(docs / ((tAcked - t0) / 1000)),
    untilAllServedMs: Math.round(t1 - t0),
    docsPerSec: Math.round(docs / ((t1 - t0) / 1000)),
    rssBeforeKiB: rssBefore, rssAfterKiB: rssKiB(opts["server-pid"]),
  }
  for (const c of cs) c.close()
}

async function reconnect() {
  const n = opts["reconnect-docs"]
  const token = tokens[0]
  const c = await connected(token, "reconnect device")
  const docs = []
  for (let i = 0; i < n; i++) {
    const h = c.repo.create({ v: `r-${i}`, kind: "reconnect", i })
    docs.push({ url: h.url, expect: `r-${i}` })
    if (i % 50 === 0) await sleep(0)
  }
  await verifyAll(token, docs, "reconnect")
  // Let the device's own sync settle before disconnecting.
  await quiet(c.adapter, opts["quiet-ms"], "reconnect: initial sync")
  c.repo.networkSubsystem.disconnect()
  await sleep(500)
  c.adapter.resetCounters()
  const wireBefore = c.adapter.wireBytesWritten()
  const t0 = performance.now()
  c.repo.networkSubsystem.reconnect()
  await whenPeered(c.repo, T, "reconnect: no peer message after reconnecting", c.adapter)
  await quiet(c.adapter, opts["quiet-ms"], "reconnect: resync")
  const quietAt = performance.now() - opts["quiet-ms"]
  results.reconnect = {
    docs: n,
    framesSent: c.adapter.framesSent,
    payloadBytesSent: c.adapter.bytesSent,
    wireBytesSent: c.adapter.wireBytesWritten() - wireBefore,
    framesReceived: c.adapter.framesReceived,
    payloadBytesReceived: c.adapter.bytesReceived,
    settleMs: Math.max(0, Math.round(quietAt - t0)),
  }
  log(`reconnect: ${results.reconnect.payloadBytesSent} bytes in ${results.reconnect.framesSent} frames sent`)
  await closeClients([c])
}

/**
 * The eviction sweeps the server logged (RUST_LOG=fitedge_server::sync::evict=debug, JSON lines):
 * `[{evicted, loaded}]` in order. Lines of other shapes are skipped.
 */
function sweeps(logFile) {
  const out = []
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    if (!line.includes("sync: eviction sweep")) continue
    let o
    try { o = JSON.parse(line) } catch { continue }
    const f = o.fields ?? o
    if (typeof f.loaded === "number") out.push({ evicted: f.evicted, loaded: f.loaded })
  }
  return out
}

/**
 * After every client has closed: waits for an eviction sweep that leaves no document loaded
 * (sweeps logged after `seen`), bounded by --evict-wait-ms; the sweeps in between. Without
 * --server-log, waits --evict-wait-ms and returns null (the count is not known).
 */
async function evicted(seen, what) {
  const file = opts["server-log"]
  const limit = opts["evict-wait-ms"]
  if (!file) { await sleep(limit); return null }
  const deadline = Date.now() + limit
  for (;;) {
    const s = sweeps(file)
    const fresh = s.slice(seen)
    // Skip the first new sweep: it may have run while the last connections were still closing.
    if (fresh.length >= 2 && fresh[fresh.length - 1].loaded === 0) {
      return { sweeps: s.length, evicted: fresh.reduce((n, x) => n + x.evicted, 0), loaded: 0 }
    }
    if (Date.now() > deadline) {
      const last = fresh.length ? fresh[fresh.length - 1].loaded : "no sweep logged"
      throw new HarnessError(`${what}: documents still loaded ${limit} ms after every client closed (last sweep: ${last}); is the server started with --sync-idle-secs 0 and RUST_LOG=fitedge_server::sync::evict=debug?`)
    }
    await sleep(200)
  }
}

function fileKiB(path) {
  if (!path) return null
  let n = 0
  for (const p of [path, `${path}-wal`]) {
    try { n += statSync(p).size } catch { /* no WAL yet */ }
  }
  return Math.round(n / 1024)
}

/**
 * (e) Stores --stored documents through the protocol, closing every connection at each sample
 * point; samples the server's memory once eviction has emptied the hub.
 */
async function stored() {
  const pid = opts["server-pid"]
  if (!pid) throw new HarnessError("--only e needs --server-pid")
  const total = opts.stored
  const points = (opts["stored-samples"] ?? [0, 0.1, 0.25, 0.5, 0.75, 1].map(f => Math.round(f * total)).join(","))
    .split(",").map(Number)
  if (points.some(p => !Number.isInteger(p) || p < 0 || p > total) || points.some((p, i) => i > 0 && p <= points[i - 1])) {
    throw new HarnessError(`--stored-samples must be increasing integers within 0..--stored, got ${points.join(",")}`)
  }
  const A = await import("@automerge/automerge")
  const nc = opts.clients
  const perConn = Math.max(1, opts["stored-per-connection"])
  const verifyEvery = Math.max(1, Math.floor(total / Math.max(1, opts["stored-verify"])))
  const toVerify = []
  const samples = []
  let done = 0
  let seenSweeps = opts["server-log"] ? sweeps(opts["server-log"]).length : 0
  const t0 = performance.now()
  const sample = async () => {
    const ev = await evicted(seenSweeps, `after ${done} stored`)
    if (ev) seenSweeps = ev.sweeps
    await sleep(1000)
    const m = memStatus(pid)
    if (ev && opts["server-log"]) {
      // Still nothing loaded at the moment of the reading.
      const s = sweeps(opts["server-log"])
      if (s.length > seenSweeps && s[s.length - 1].loaded !== 0) throw new HarnessError(`after ${done} stored: a sweep reports ${s[s.length - 1].loaded} loaded with no client connected`)
    }
    const row = { stored: done, ...m, loaded: ev?.loaded ?? null, evictedSinceLast: ev?.evicted ?? null, dbKiB: fileKiB(opts["server-db"]), atMs: Math.round(performance.now() - t0) }
    samples.push(row)
    log(`stored: ${done} documents; VmRSS ${m.rssKiB} KiB (anon ${m.anonKiB}, file ${m.fileKiB}, peak ${m.hwmKiB}); loaded ${row.loaded ?? "?"}`)
  }
  for (const target of points) {
    // Store up to `target`: each client opens a connection, stores up to --stored-per-connection,
    // closes it and opens the next, until `target` documents are stored.
    const tStart = performance.now()
    const from = done
    let next = done
    await Promise.all(Array.from({ length: nc }, async (_, ci) => {
      while (next < target) {
        const c = new RawClient(opts.url, tokens[ci % tokens.length])
        await c.connect(T)
        try {
          for (let k = 0; k < perConn && next < target; k++) {
            const i = next++
            const v = `s-${i}`
            const url = await c.push(A.from({ v, kind: "stored", i }), T)
            if (i % verifyEvery === 0) toVerify.push({ url, expect: v })
            if (++done % 5000 === 0) log(`stored: ${done} of ${total} after ${Math.round((performance.now() - t0) / 1000)} s`)
          }
        } catch (e) {
          throw new HarnessError(`stored: client ${ci}: ${e.message} (${done} stored by then)`)
        } finally {
          c.close()
        }
      }
    }))
    if (target > from) log(`stored: ${target - from} more in ${Math.round(performance.now() - tStart)} ms (${Math.round((target - from) / ((performance.now() - tStart) / 1000))} docs/s); every client closed, waiting for eviction`)
    await sample()
  }
  const storeMs = Math.round(performance.now() - t0)
  // Everything is still there: a spread of documents, loaded again from SQL.
  await verifyAll(tokens[0], toVerify, "stored (verify)")
  const first = samples.find(s => s.stored > 0) ?? samples[0]
  const last = samples[samples.length - 1]
  const growthKiB = last.rssKiB - first.rssKiB
  const perDocB = last.stored > first.stored ? Math.round((growthKiB * 1024) / (last.stored - first.stored)) : null
  const margin = opts["flat-margin-pct"]
  results.stored = {
    docs: total, clients: nc, perConnection: perConn, samples, storeMs, verified: toVerify.length,
    flatFrom: first.stored, growthKiB, growthPct: +((100 * growthKiB) / first.rssKiB).toFixed(1), bytesPerStoredDoc: perDocB,
    marginPct: margin, flat: growthKiB <= (first.rssKiB * margin) / 100,
  }
  log(`stored: ${total} documents in ${Math.round(storeMs / 1000)} s; VmRSS ${first.rssKiB} KiB at ${first.stored} -> ${last.rssKiB} KiB at ${last.stored} (${results.stored.flat ? "flat" : "NOT flat"} within ${margin} %)`)
}

/** Resolves once the adapter has sent and received nothing for `ms`; bounded by --timeout-ms. */
function quiet(adapter, ms, what) {
  return withTimeout(new Promise(resolve => {
    let last = -1
    let since = performance.now()
    const tick = setInterval(() => {
      const now = adapter.framesSent + adapter.framesReceived
      if (now !== last) { last = now; since = performance.now() }
      else if (performance.now() - since >= ms) { clearInterval(tick); resolve() }
    }, 50)
  }), T + ms, what)
}

function table(r) {
  const rows = [["measure", "result", "detail"], ["---", "---", "---"]]
  const t = r.throughput
  if (t && t.creator === "raw") rows.push(["(a) sync throughput", `${t.docsPerSec} docs/s`, `${t.clients} concurrent clients x ${t.docsPerClient} docs = ${t.docs} (${t.inFlight} in flight per client); server acknowledged all after ${t.ackedMs} ms (${t.ackedDocsPerSec} docs/s); all fetched back by a fresh client after ${t.untilAllServedMs} ms; server VmRSS ${t.rssBeforeKiB} -> ${t.rssAfterKiB} KiB`])
  else if (t) rows.push(["(a) sync throughput (JS Repo clients)", `${t.docsPerSec} docs/s`, `${t.clients} clients x ${t.docsPerClient} docs = ${t.docs}; created in ${t.createMs} ms, all fetched back by a fresh client after ${t.untilAllServedMs} ms`])
  const l = r.latency
  if (l) rows.push(["(b) change round trip A->server->B, p99", `${l.p99ms} ms`, `${l.changes} changes; p50 ${l.p50ms} ms, max ${l.maxms} ms (the JS client holds each change up to 100 ms before sending); from A's socket write to B: p50 ${l.fromSendP50ms} ms, p99 ${l.fromSendP99ms} ms`])
  const m = r.memory
  if (m && !m.skipped) rows.push(["(c) server RSS per loaded document", `${(m.bytesPerDoc / 1024).toFixed(1)} KiB`, `${m.docs} docs; VmRSS ${m.rssBeforeKiB} -> ${m.rssAfterKiB} KiB`])
  else if (m) rows.push(["(c) server RSS per loaded document", "n/a", m.skipped])
  const c = r.reconnect
  if (c) rows.push(["(d) bytes sent to reconnect, 1 device", `${c.payloadBytesSent} B`, `${c.docs} unchanged docs; ${c.framesSent} frames; ${c.wireBytesSent} B on TCP incl. upgrade + framing; received ${c.payloadBytesReceived} B in ${c.framesReceived} frames`])
  const e = r.stored
  if (e) {
    rows.push(["(e) server memory with stored documents after eviction", e.flat ? "flat" : "NOT flat", `VmRSS ${e.growthKiB >= 0 ? "+" : ""}${e.growthKiB} KiB (${e.growthPct} %) from ${e.flatFrom} to ${e.docs} stored documents (${e.bytesPerStoredDoc} B per stored document); flat = within ${e.marginPct} %; ${e.verified} spread documents fetched back after eviction`])
  }
  let out = rows.map(row => `| ${row.join(" | ")} |`).join("\n")
  if (e) {
    const srows = [["stored documents", "VmRSS KiB", "RssAnon KiB", "RssFile KiB", "peak VmHWM KiB", "loaded (server)", "evicted since last", "database KiB", "at s"], Array(9).fill("---")]
    for (const s of e.samples) srows.push([s.stored, s.rssKiB, s.anonKiB, s.fileKiB, s.hwmKiB, s.loaded ?? "n/a", s.evictedSinceLast ?? "n/a", s.dbKiB ?? "n/a", (s.atMs / 1000).toFixed(0)].map(String))
    out += `\n\n(e) ${e.docs} documents stored by ${e.clients} clients, ${e.perConnection} per connection; each row after every client closed and the eviction sweep left nothing loaded\n\n`
    out += srows.map(row => `| ${row.join(" | ")} |`).join("\n")
  }
  return out
}

async function main() {
  const hard = setTimeout(() => {
    process.stderr.write(`bench: total timeout ${opts["total-timeout-ms"]} ms\n`)
    process.exit(1)
  }, opts["total-timeout-ms"])
  hard.unref()
  const only = new Set(opts.only.split(","))
  // Memory first, on a server that holds nothing of ours yet.
  if (only.has("c")) await memory()
  if (only.has("b")) await latency()
  if (only.has("a")) await throughput()
  if (only.has("d")) await reconnect()
  if (only.has("e")) await stored()
  results.finishedAt = new Date().toISOString()
  if (opts.json) writeFileSync(opts.json, JSON.stringify(results, null, 2) + "\n")
  process.stdout.write(table(results) + "\n")
}

process.on("uncaughtException", e => { process.stderr.write(`bench failed: uncaught ${e?.stack ?? e}\n`); process.exit(1) })
main().then(
  async () => { await closeClients([...all]); process.exit(0) },
  e => { process.stderr.write(`bench failed: ${e?.message ?? e}\n`); process.exit(1) },
)
