#!/usr/bin/env node
// Interoperability scenarios for an automerge-repo sync server (protocol v1), driven with the
// published JavaScript client (@automerge/automerge-repo + -network-websocket).
//
//   node interop.mjs --url ws://127.0.0.1:PORT/api/v1/sync --token-a T1 [--token-b T1'] [--token-other T2]
//   node interop.mjs --url ws://127.0.0.1:PORT/api/v1/sync --register http://127.0.0.1:PORT
//   node interop.mjs --url ws://127.0.0.1:PORT                       (no auth: the reference server)
//   node interop.mjs ... --scenario cross --peer-cmd "CMD"            (another implementation in the middle)
//   node interop.mjs ... --scenario cross --doc workout --peer-cmd "CMD"   (the same with a FitEdge workout document)
//   node interop.mjs --url ws://... --scenario peer                  (the middle peer; the task comes from the environment)
//
// Scenario `basic`: client A (user 1) creates a document and changes it; client B (user 1, its
// own Repo, nothing stored) finds it by URL and sees the change; B changes it; A sees B's change.
// With a second user's token, that user's client must NOT get the document (doc-unavailable).
//
// Scenario `cross`: A creates and changes a document, then runs CMD with FITEDGE_INTEROP_URL,
// FITEDGE_INTEROP_DOC_URL, FITEDGE_INTEROP_TOKEN and FITEDGE_INTEROP_EXPECT set; CMD must find
// the document, check `expect`, and set `peer` to FITEDGE_INTEROP_PEER_VALUE; A must see it.
// With `--doc workout` the document is a FitEdge workout (type fitedge.workout, schema version 2,
// completed; the server validates it), the value to check is its `title` and the peer writes its
// `notes`: FITEDGE_INTEROP_EXPECT_KEY=title, FITEDGE_INTEROP_PEER_KEY=notes and
// FITEDGE_INTEROP_DOC_KIND=fitedge.workout tell CMD so (our device client reads it as a workout).
//
// Scenario `peer`: the middle peer of a scenario another client drives (our device client,
// tests/tests/device_interop.rs). From the environment: FITEDGE_INTEROP_TOKEN (unless --token-a),
// FITEDGE_INTEROP_DOC_URL, FITEDGE_INTEROP_EXPECT_KEY (default expect), FITEDGE_INTEROP_EXPECT,
// FITEDGE_INTEROP_PEER_KEY (default peer), FITEDGE_INTEROP_PEER_VALUE and optionally
// FITEDGE_INTEROP_DOC_KIND. With a token, the server's listing (GET /api/v1/sync/docs, on the
// sync URL's host) must name the document (with that kind); then the peer finds it, checks the
// expected field, writes its own, and a fresh client must read that change back from the server.
//
// Prints one JSON object on stdout; exits 0 when every step passed, 1 on a failed step or
// timeout, 2 on a usage error.
import { spawn } from "node:child_process"
import {
  HarnessError, parseArgs, makeClient, whenPeered, findWithRetry, waitForDoc, withTimeout,
  registerUser, login, redact, clientUrl, sleep,
} from "./lib.mjs"

const spec = {
  url: { help: "WebSocket URL of the sync endpoint" },
  "token-a": {}, "token-b": {}, "token-other": {},
  register: { help: "HTTP base URL: register users in dev mode through the REST API" },
  scenario: { default: "basic" },
  "peer-cmd": {},
  doc: { default: "untyped", help: "cross: untyped | workout" },
  "timeout-ms": { number: true, default: 15_000 },
  "total-timeout-ms": { number: true, default: 120_000 },
  "unavailable-ms": { number: true, default: 5_000 },
  trace: { flag: true },
  "strip-undefined-metadata": { flag: true },
}

const result = { scenario: null, url: null, ok: false, steps: [] }
const clients = []
let finished = false
let STRIP = false

function finish(code, error) {
  if (finished) return
  finished = true
  if (error) result.error = error
  result.ok = code === 0
  for (const c of clients) {
    result.clients ??= {}
    result.clients[c.name] = {
      framesSent: c.adapter.framesSent, bytesSent: c.adapter.bytesSent,
      framesReceived: c.adapter.framesReceived, bytesReceived: c.adapter.bytesReceived,
      errors: [...new Set(c.adapter.errors)],
    }
  }
  let text
  try {
    text = JSON.stringify(result, null, 2)
  } catch (e) {
    code = 1
    text = JSON.stringify({ ok: false, error: `could not serialise the result: ${e.message}` })
  }
  process.stdout.write(text + "\n")
  // Repos keep timers and sockets; shut down with a bound, then exit regardless.
  Promise.race([Promise.allSettled(clients.map(c => c.repo.shutdown())), sleep(2000)]).finally(() => process.exit(code))
}

process.on("uncaughtException", e => finish(1, `uncaught exception: ${e?.stack ?? e}`))
process.on("unhandledRejection", e => finish(1, `unhandled rejection: ${e?.stack ?? e}`))

async function step(name, fn) {
  const t0 = performance.now()
  const rec = { name, ok: false }
  result.steps.push(rec)
  try {
    const detail = await fn()
    rec.ok = true
    if (detail !== undefined) rec.detail = detail
    return detail
  } catch (e) {
    rec.error = e?.message ?? String(e)
    throw e
  } finally {
    rec.ms = Math.round(performance.now() - t0)
  }
}

function client(name, url, token, trace) {
  const traceFn = trace ? ev => process.stderr.write(JSON.stringify({ client: name, ...ev }) + "\n") : null
  const c = { name, ...makeClient(url, token, { trace: traceFn, stripUndefinedMetadata: STRIP }) }
  clients.push(c)
  return c
}

async function basic(opts, tokens) {
  const T = opts["timeout-ms"]
  const a = client("A", opts.url, tokens.a, opts.trace)
  const b = client("B", opts.url, tokens.b, opts.trace)
  await step("A connects (join/peer)", () => whenPeered(a.repo, T, "A: no peer message from the server", a.adapter))
  const nonce = Math.random().toString(36).slice(2)
  const handle = a.repo.create({ title: "interop", nonce, log: [] })
  const docUrl = handle.url
  result.docUrl = docUrl
  await step("A creates and changes the document", async () => {
    handle.change(d => { d.log.push("A1"); d.counter = 1 })
    return { docUrl }
  })
  await step("B connects (join/peer)", () => whenPeered(b.repo, T, "B: no peer message from the server", b.adapter))
  let bh
  await step("B finds the document by URL", async () => {
    // A retry needs a fresh Repo (automerge-repo remembers "unavailable"): B again, new state.
    const fresh = async (attempt, left) => {
      const c = client(`B (attempt ${attempt})`, opts.url, tokens.b, opts.trace)
      await whenPeered(c.repo, left, `B attempt ${attempt}: no peer message`, c.adapter)
      return c.repo
    }
    const { handle: h, attempts } = await findWithRetry(b.repo, fresh, docUrl, T, "B: find")
    bh = h
    return { attempts }
  })
  await step("B sees A's change", async () => {
    const d = await waitForDoc(bh, d => d.nonce === nonce && d.counter === 1 && d.log?.includes("A1"), T, "B: A's change")
    return { log: [...d.log], counter: d.counter }
  })
  await step("B changes the document", async () => {
    bh.change(d => { d.log.push("B1"); d.counter = 2 })
  })
  await step("A sees B's change", async () => {
    const d = await waitForDoc(handle, d => d.counter === 2 && d.log?.includes("B1"), T, "A: B's change")
    return { log: [...d.log], counter: d.counter }
  })
  if (tokens.other) {
    const o = client("other-user", opts.url, tokens.other, opts.trace)
    await step("another user connects", () => whenPeered(o.repo, T, "other user: no peer message", o.adapter))
    await step("another user cannot get the document", async () => {
      const ms = opts["unavailable-ms"]
      try {
        const h = await withTimeout(o.repo.find(docUrl), ms, "other user's find")
        throw new HarnessError(`other user got the document: ${JSON.stringify(h.doc())}`)
      } catch (e) {
        if (e instanceof HarnessError && e.message.startsWith("other user got")) throw e
        if (/unavailable/i.test(e?.message ?? "")) return { answer: "unavailable" }
        throw new HarnessError(`expected the document to be unavailable, got: ${e?.message ?? e}`)
      }
    })
  }
}

function runPeer(cmd, env, ms) {
  return new Promise((resolve, reject) => {
    const p = spawn("sh", ["-c", cmd], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    p.stdout.on("data", d => { out += d })
    p.stderr.on("data", d => { err += d; if (err.length > 200_000) err = err.slice(-100_000) })
    const t = setTimeout(() => { p.kill("SIGKILL"); reject(new HarnessError(`peer command timed out after ${ms} ms; stderr tail: ${err.slice(-2000)}`)) }, ms)
    p.on("error", e => { clearTimeout(t); reject(new HarnessError(`peer command failed to start: ${e.message}`)) })
    p.on("close", code => {
      clearTimeout(t)
      if (code === 0) resolve({ stdoutTail: out.slice(-2000) })
      else reject(new HarnessError(`peer command exited ${code}; output tail: ${(out + err).slice(-3000)}`))
    })
  })
}

/** A FitEdge workout document as the JavaScript library writes it (strings become text). */
function workoutDoc(title) {
  const start = Date.now() - 2 * 3600_000
  return {
    type: "fitedge.workout", schemaVersion: 2, id: crypto.randomUUID(), sport: "running",
    state: "completed", title, notes: "", startTime: start, endTime: start + 1_800_000,
    summary: { elapsedS: 1800, timerS: 1800, movingS: 1750, caloriesKcal: 320.5, distanceM: 5000.25 },
    laps: [], validation: { samples: 0, rejected: 0, flagged: 0 }, chunks: [],
  }
}

function field(d, key) {
  const v = d?.[key]
  return v === undefined || v === null ? v : String(v)
}

/** waitForDoc, failing with what the field read at the end. */
async function waitForField(handle, key, expected, ms, who) {
  try {
    await waitForDoc(handle, d => field(d, key) === expected, ms, `${who}: ${key} = ${JSON.stringify(expected)}`)
  } catch (e) {
    let seen
    try { seen = field(handle.doc(), key) } catch (err) { seen = `<unreadable: ${err.message}>` }
    throw new HarnessError(`${e.message}; ${key} reads ${JSON.stringify(seen)}`)
  }
}

async function cross(opts, tokens) {
  if (!opts["peer-cmd"]) throw new HarnessError("--scenario cross needs --peer-cmd")
  if (!["untyped", "workout"].includes(opts.doc)) throw new HarnessError(`unknown --doc ${opts.doc}`)
  const T = opts["timeout-ms"]
  const a = client("A", opts.url, tokens.a, opts.trace)
  await step("A connects (join/peer)", () => whenPeered(a.repo, T, "A: no peer message from the server", a.adapter))
  const expect = `from-node-${Math.random().toString(36).slice(2)}`
  const peerValue = `from-peer-${Math.random().toString(36).slice(2)}`
  const workout = opts.doc === "workout"
  const keys = workout ? { expect: "title", peer: "notes" } : { expect: "expect", peer: "peer" }
  const handle = a.repo.create(workout ? workoutDoc(expect) : { title: "cross", expect })
  handle.change(d => { if (workout) d.summary.movingS = 1700; else d.node = "changed" })
  result.docUrl = handle.url
  await step("peer finds the document, checks it and changes it", () =>
    runPeer(opts["peer-cmd"], {
      FITEDGE_INTEROP_URL: opts.url,
      FITEDGE_INTEROP_TOKEN: tokens.b ?? "",
      FITEDGE_INTEROP_DOC_URL: handle.url,
      FITEDGE_INTEROP_DOC_KIND: workout ? "fitedge.workout" : "",
      FITEDGE_INTEROP_EXPECT_KEY: keys.expect,
      FITEDGE_INTEROP_EXPECT: expect,
      FITEDGE_INTEROP_PEER_KEY: keys.peer,
      FITEDGE_INTEROP_PEER_VALUE: peerValue,
    }, opts["total-timeout-ms"]))
  await step("A sees the peer's change", async () => {
    await waitForField(handle, keys.peer, peerValue, T, "A: the peer's change")
    return { [keys.peer]: peerValue }
  })
}

/** GET /api/v1/sync/docs on the sync URL's host, as the token's user. */
async function listDocs(wsUrl, token, ms) {
  const u = new URL(wsUrl)
  u.protocol = u.protocol === "wss:" ? "https:" : "http:"
  u.pathname = u.pathname.replace(/\/api\/v1\/sync\/?$/, "") + "/api/v1/sync/docs"
  u.search = ""
  let res
  try {
    res = await withTimeout(fetch(u, { headers: { authorization: `Bearer ${token}` } }), ms, `GET ${u.pathname}`)
  } catch (e) {
    throw new HarnessError(`GET ${u.pathname} failed: ${e.message}`)
  }
  const text = await res.text()
  if (!res.ok) throw new HarnessError(`GET ${u.pathname} answered ${res.status}: ${text.slice(0, 300)}`)
  return JSON.parse(text)
}

async function peer(opts, tokens) {
  const T = opts["timeout-ms"]
  const env = name => process.env[name] || undefined
  const need = name => {
    const v = env(name)
    if (!v) throw new HarnessError(`${name} is not set (the driving scenario sets it)`)
    return v
  }
  const token = tokens.a ?? env("FITEDGE_INTEROP_TOKEN")
  const docUrl = need("FITEDGE_INTEROP_DOC_URL")
  const kind = env("FITEDGE_INTEROP_DOC_KIND")
  const expectKey = env("FITEDGE_INTEROP_EXPECT_KEY") ?? "expect"
  const expect = need("FITEDGE_INTEROP_EXPECT")
  const peerKey = env("FITEDGE_INTEROP_PEER_KEY") ?? "peer"
  const value = need("FITEDGE_INTEROP_PEER_VALUE")
  result.docUrl = docUrl
  if (token) {
    await step("the server lists the document", async () => {
      const id = docUrl.replace(/^automerge:/, "")
      const deadline = Date.now() + T
      let seen = []
      for (;;) {
        const list = await listDocs(opts.url, token, Math.max(1, deadline - Date.now()))
        seen = list.map(e => `${e.document_id} (${e.kind})`)
        const entry = list.find(e => e.document_id === id)
        if (entry) {
          if (kind && entry.kind !== kind) throw new HarnessError(`listed as ${entry.kind}, expected ${kind}`)
          return { kind: entry.kind, access: entry.access, listed: list.length }
        }
        if (Date.now() >= deadline) {
          throw new HarnessError(`timed out after ${T} ms: ${id} not in GET /api/v1/sync/docs; listed: ${seen.join(", ") || "nothing"}`)
        }
        await sleep(200)
      }
    })
  }
  const p = client("peer", opts.url, token, opts.trace)
  await step("peer connects (join/peer)", () => whenPeered(p.repo, T, "peer: no peer message from the server", p.adapter))
  let handle
  await step("peer finds the document by URL", async () => {
    const fresh = async (attempt, left) => {
      const c = client(`peer (attempt ${attempt})`, opts.url, token, opts.trace)
      await whenPeered(c.repo, left, `peer attempt ${attempt}: no peer message`, c.adapter)
      return c.repo
    }
    const { handle: h, attempts } = await findWithRetry(p.repo, fresh, docUrl, T, "peer: find")
    handle = h
    return { attempts }
  })
  await step(`peer reads ${expectKey}`, async () => {
    await waitForField(handle, expectKey, expect, T, "peer")
    return { [expectKey]: expect }
  })
  await step(`peer writes ${peerKey}`, async () => {
    handle.change(d => { d[peerKey] = value })
  })
  await step("a fresh client reads the peer's change back from the server", async () => {
    const c = client("check", opts.url, token, opts.trace)
    await whenPeered(c.repo, T, "check: no peer message", c.adapter)
    const h = await withTimeout(c.repo.find(docUrl), T, `check: find ${docUrl}`)
    await waitForField(h, peerKey, value, T, "check")
    return { [peerKey]: value }
  })
}

async function main() {
  let opts
  try {
    opts = parseArgs(process.argv.slice(2), spec)
    if (!opts.url) throw new HarnessError("--url is required (ws://host:port/path)")
    if (!["basic", "cross", "peer"].includes(opts.scenario)) throw new HarnessError(`unknown --scenario ${opts.scenario}`)
  } catch (e) {
    process.stderr.write(`usage error: ${e.message}\n`)
    process.exit(2)
  }
  result.scenario = opts.scenario
  STRIP = !!opts["strip-undefined-metadata"]
  if (STRIP) result.diagnostic = "strip-undefined-metadata: join sent without undefined peerMetadata keys (not the stock client)"
  result.url = redact(clientUrl(opts.url, opts["token-a"]))
  const hard = setTimeout(() => finish(1, `total timeout ${opts["total-timeout-ms"]} ms`), opts["total-timeout-ms"])
  hard.unref()
  try {
    const tokens = { a: opts["token-a"], b: opts["token-b"] ?? opts["token-a"], other: opts["token-other"] }
    if (opts.register) {
      await step("register users through the REST API", async () => {
        const u1 = await registerUser(opts.register, "interop-user1")
        const u2 = await registerUser(opts.register, "interop-user2")
        tokens.a = await login(opts.register, u1)
        tokens.b = await login(opts.register, u1)
        tokens.other = await login(opts.register, u2)
        return { user1: u1, user2: u2 }
      })
    }
    if (opts.scenario === "basic") await basic(opts, tokens)
    else if (opts.scenario === "peer") await peer(opts, tokens)
    else await cross(opts, tokens)
    finish(0)
  } catch (e) {
    finish(1, e?.message ?? String(e))
  }
}

main()
