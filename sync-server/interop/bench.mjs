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
// Every wait is bounded (--timeout-ms per wait, --total-timeout-ms overall); exit 1 on failure.
import { readFileSync, writeFileSync } from "node:fs"
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
  return rows.map(row => `| ${row.join(" | ")} |`).join("\n")
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
  results.finishedAt = new Date().toISOString()
  if (opts.json) writeFileSync(opts.json, JSON.stringify(results, null, 2) + "\n")
  process.stdout.write(table(results) + "\n")
}

process.on("uncaughtException", e => { process.stderr.write(`bench failed: uncaught ${e?.stack ?? e}\n`); process.exit(1) })
main().then(
  async () => { await closeClients([...all]); process.exit(0) },
  e => { process.stderr.write(`bench failed: ${e?.message ?? e}\n`); process.exit(1) },
)
