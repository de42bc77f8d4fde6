// Shared by interop.mjs and bench.mjs: argument parsing, dev-mode registration through the REST
// API, a Repo per client (in-memory, no storage) over a WebSocket adapter that counts what it
// sends and receives, and bounded waits.
import { Repo, cbor, generateAutomergeUrl } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

export class HarnessError extends Error {}

/** `--key value` and `--flag` pairs; unknown keys are refused so typos fail loudly. */
export function parseArgs(argv, spec) {
  const out = {}
  for (const [k, v] of Object.entries(spec)) if (v.default !== undefined) out[k] = v.default
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith("--")) throw new HarnessError(`unexpected argument ${a}`)
    const key = a.slice(2)
    const s = spec[key]
    if (!s) throw new HarnessError(`unknown option --${key}; known: ${Object.keys(spec).map(k => "--" + k).join(" ")}`)
    if (s.flag) { out[key] = true; continue }
    const v = argv[++i]
    if (v === undefined) throw new HarnessError(`--${key} needs a value`)
    out[key] = s.number ? Number(v) : v
    if (s.number && !Number.isFinite(out[key])) throw new HarnessError(`--${key} wants a number, got ${v}`)
  }
  return out
}

export function sleep(ms) {
  return new Promise(r => setTimeout(r, ms))
}

/** Rejects with a message naming `what` when `promise` has not settled within `ms`. */
export function withTimeout(promise, ms, what) {
  let t
  const timeout = new Promise((_, rej) => {
    t = setTimeout(() => rej(new HarnessError(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t))
}

/** Resolves when `pred(handle.doc())` is true, checking on every change; bounded by `ms`. */
export function waitForDoc(handle, pred, ms, what) {
  return withTimeout(
    new Promise(resolve => {
      const check = () => {
        let doc
        try { doc = handle.doc() } catch { return false }
        if (doc && pred(doc)) {
          handle.off("change", check)
          resolve(doc)
          return true
        }
        return false
      }
      if (!check()) handle.on("change", check)
    }),
    ms,
    what,
  )
}

/**
 * Finds a document, retrying while the server answers `doc-unavailable` (the creator's sync may
 * still be in flight) until `ms` has passed. automerge-repo caches an unavailable answer for the
 * life of a Repo, so each retry asks `nextRepo(attempt)` for a fresh client. Returns the handle,
 * the Repo that holds it and the number of attempts.
 */
export async function findWithRetry(firstRepo, nextRepo, url, ms, what) {
  const deadline = Date.now() + ms
  let last
  let repo = firstRepo
  for (let attempt = 1; ; attempt++) {
    const left = deadline - Date.now()
    if (left <= 0) {
      throw new HarnessError(`timed out after ${ms} ms: ${what} (${attempt - 1} attempts; last: ${last})`)
    }
    try {
      if (attempt > 1) repo = await nextRepo(attempt, left)
      const handle = await withTimeout(repo.find(url), Math.min(left, 10_000), `find ${url}`)
      return { handle, repo, attempts: attempt }
    } catch (e) {
      last = e?.message ?? String(e)
      await sleep(Math.min(200, Math.max(0, deadline - Date.now())))
    }
  }
}

/** The sync endpoint URL for a client: the token rides in `?access_token=` (the JS adapter cannot set headers). */
export function clientUrl(wsUrl, token) {
  if (!token) return wsUrl
  const u = new URL(wsUrl)
  u.searchParams.set("access_token", token)
  return u.toString()
}

export function redact(url) {
  return url.replace(/access_token=[^&]*/, "access_token=REDACTED")
}

/** Short description of one CBOR frame for traces: its type and fields other than data. */
export function describeFrame(bytes) {
  try {
    const m = cbor.decode(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes))
    const o = {}
    for (const [k, v] of Object.entries(m)) {
      o[k] = v instanceof Uint8Array ? `<${v.byteLength} bytes>` : v
    }
    return o
  } catch (e) {
    return { undecodable: Buffer.from(bytes).toString("hex").slice(0, 200), error: String(e) }
  }
}

/**
 * The automerge-repo WebSocket client adapter, counting the bytes of every frame it writes and
 * reads on the socket (payload bytes as handed to ws; `wireBytesWritten()` adds framing and the
 * HTTP upgrade from the TCP socket). Socket errors are recorded, not thrown (the stock adapter
 * throws them out of an event handler, which would kill the process without a report).
 */
export class CountingAdapter extends WebSocketClientAdapter {
  constructor(url, { retryMs = 1000, trace = null, stripUndefinedMetadata = false } = {}) {
    super(url, retryMs)
    this.stripUndefinedMetadata = stripUndefinedMetadata
    this.bytesSent = 0
    this.framesSent = 0
    this.bytesReceived = 0
    this.framesReceived = 0
    this.errors = []
    this.closes = 0
    this.trace = trace
    this.sockets = []
    this.onError = ev => {
      const msg = ev?.error?.message ?? ev?.message ?? "websocket error"
      this.errors.push(msg)
      if (this.trace) this.trace({ dir: "error", message: msg })
    }
    const parentClose = this.onClose
    this.onClose = ev => {
      this.closes++
      if (this.trace) this.trace({ dir: "close", code: ev?.code, reason: ev?.reason?.toString?.() })
      parentClose(ev)
    }
  }

  connect(peerId, peerMetadata) {
    // Diagnostic only (--strip-undefined-metadata): a storage-less Repo sends
    // `peerMetadata: {storageId: undefined, ...}`, CBOR simple value 23 (0xf7); this drops such
    // keys to see what a server that rejects them does next. Never on in interop.sh.
    if (this.stripUndefinedMetadata && peerMetadata) {
      peerMetadata = Object.fromEntries(Object.entries(peerMetadata).filter(([, v]) => v !== undefined))
    }
    super.connect(peerId, peerMetadata)
    const s = this.socket
    if (!s || s.__counted) return
    s.__counted = true
    this.sockets.push(s)
    const send = s.send.bind(s)
    s.send = (data, ...rest) => {
      this.bytesSent += data.byteLength
      this.framesSent++
      if (this.onSent) this.onSent(data)
      if (this.trace) this.trace({ dir: "sent", bytes: data.byteLength, frame: describeFrame(data) })
      return send(data, ...rest)
    }
    s.addEventListener("message", ev => {
      const n = ev.data?.byteLength ?? 0
      this.bytesReceived += n
      this.framesReceived++
      // Surface the server's `error` messages in failure reports (the stock adapter only logs them).
      if (n > 0 && n < 2048) {
        try {
          const m = cbor.decode(new Uint8Array(ev.data))
          if (m?.type === "error") this.errors.push(`server sent error: ${m.message}`)
        } catch { /* not ours to judge here */ }
      }
      if (this.trace) this.trace({ dir: "received", bytes: n, frame: describeFrame(ev.data) })
    })
  }

  /** Bytes written on the TCP sockets so far (WebSocket framing and the upgrade request included). */
  wireBytesWritten() {
    return this.sockets.reduce((n, s) => n + (s._socket?.bytesWritten ?? 0), 0)
  }

  resetCounters() {
    this.bytesSent = this.framesSent = this.bytesReceived = this.framesReceived = 0
  }
}

/** A storage-less Repo talking to one server. */
export function makeClient(wsUrl, token, opts = {}) {
  const adapter = new CountingAdapter(clientUrl(wsUrl, token), opts)
  const repo = new Repo({ network: [adapter], sharePolicy: async () => true })
  return { repo, adapter }
}

/** Resolves when the adapter has a peer (the server answered `peer`); bounded. */
export function whenPeered(repo, ms, what, adapter) {
  const p = new Promise(resolve => {
    if (repo.peers.length > 0) return resolve()
    repo.networkSubsystem.once("peer", () => resolve())
  })
  return withTimeout(p, ms, what).catch(e => {
    const errs = adapter?.errors?.length ? `; socket errors and server error messages: ${[...new Set(adapter.errors)].join(" | ")}` : ""
    throw new HarnessError(`${e.message}${errs}`)
  })
}

// ---------- REST (dev mode) ----------

async function postJson(base, path, body, token) {
  const headers = { "content-type": "application/json" }
  if (token) headers.authorization = `Bearer ${token}`
  let res
  try {
    res = await withTimeout(fetch(new URL(path, base), { method: "POST", headers, body: JSON.stringify(body) }), 30_000, `POST ${path}`)
  } catch (e) {
    throw new HarnessError(`POST ${path} failed: ${e.message}`)
  }
  const text = await res.text()
  if (!res.ok) throw new HarnessError(`POST ${path} answered ${res.status}: ${text.slice(0, 500)}`)
  try {
    return JSON.parse(text)
  } catch {
    throw new HarnessError(`POST ${path} answered non-JSON: ${text.slice(0, 200)}`)
  }
}

const PASSWORD = "correct horse battery!"

/** Registers and verifies a new user (dev mode returns `dev_token`); returns its email. */
export async function registerUser(base, label) {
  const email = `${label}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}@example.com`
  const reg = await postJson(base, "/api/v1/auth/register", {
    email, password: PASSWORD, birth_date: "1990-01-01", display_name: label,
  })
  if (!reg.dev_token) throw new HarnessError("register answered without dev_token: is the server in --dev mode?")
  await postJson(base, "/api/v1/auth/verify-email", { token: reg.dev_token })
  return email
}

/** Signs in (one new session); returns the bearer token. */
export async function login(base, email) {
  const r = await postJson(base, "/api/v1/auth/login", { email, password: PASSWORD })
  if (!r.access_token) throw new HarnessError("login answered without access_token")
  return r.access_token
}

// ---------- a bare protocol-v1 client, for verifying many documents cheaply ----------

/**
 * Speaks the wire protocol directly (join/peer, request/sync, doc-unavailable) with
 * @automerge/automerge's sync functions and no Repo: fetching thousands of documents through a
 * Repo costs the client far more CPU than the server, which would make the benchmark measure
 * the client. Each `fetch` starts from an empty document, as a new device would.
 */
export class RawClient {
  constructor(wsUrl, token) {
    this.url = clientUrl(wsUrl, token)
    this.peerId = `raw-${Math.random().toString(36).slice(2, 10)}`
    this.pending = new Map()
    this.errors = []
  }

  async connect(ms) {
    const { default: WebSocket } = await import("ws")
    this.A = await import("@automerge/automerge")
    await withTimeout(new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url)
      ws.binaryType = "nodebuffer"
      this.ws = ws
      ws.on("error", e => { this.errors.push(e.message); reject(new HarnessError(`raw client: ${e.message}`)) })
      ws.on("open", () => this.send({ type: "join", senderId: this.peerId, peerMetadata: { isEphemeral: true }, supportedProtocolVersions: ["1"] }))
      ws.on("close", (code, reason) => {
        const why = `raw client: socket closed (code ${code}${reason?.length ? `, ${reason}` : ""})`
        this.errors.push(why)
        for (const p of this.pending.values()) p.reject(new HarnessError(why))
        this.pending.clear()
      })
      ws.on("message", data => {
        let m
        try { m = cbor.decode(new Uint8Array(data)) } catch (e) { this.errors.push(`undecodable frame: ${e}`); return }
        if (m.type === "peer") { this.remote = m.senderId; resolve() }
        else if (m.type === "error") { this.errors.push(`error message: ${m.message}`); reject(new HarnessError(`server sent error: ${m.message}`)) }
        else this.onMessage(m)
      })
    }), ms, "raw client: no peer message")
  }

  send(m) {
    this.ws.send(cbor.encode(m))
  }

  onMessage(m) {
    const p = this.pending.get(m.documentId)
    if (!p) return
    if (m.type === "doc-unavailable") {
      this.pending.delete(m.documentId)
      p.resolve({ available: false })
      return
    }
    if (m.type !== "sync" && m.type !== "request") return
    const A = this.A
    ;[p.doc, p.state] = A.receiveSyncMessage(p.doc, p.state, m.data)
    if (p.done(p.doc, m.data)) {
      this.pending.delete(m.documentId)
      p.resolve({ available: true, doc: p.doc })
      return
    }
    const [state, reply] = A.generateSyncMessage(p.doc, p.state)
    p.state = state
    if (reply) this.send({ type: "sync", senderId: this.peerId, targetId: this.remote, documentId: m.documentId, data: reply })
  }

  /** Resolves `{available, doc}` once `done(doc)` holds, or `{available: false}` on doc-unavailable. */
  fetch(url, done, ms) {
    const documentId = url.replace(/^automerge:/, "")
    const A = this.A
    let doc = A.init()
    let [state, msg] = A.generateSyncMessage(doc, A.initSyncState())
    const p = new Promise((resolve, reject) => {
      this.pending.set(documentId, { doc, state, done, resolve, reject })
    })
    this.send({ type: "request", senderId: this.peerId, targetId: this.remote, documentId, data: msg })
    return withTimeout(p, ms, `raw fetch ${url}`).finally(() => this.pending.delete(documentId))
  }

  /**
   * Sends a document this client made (as a Repo does for a new document: `sync`, not `request`)
   * and resolves when the server's reply carries our heads, i.e. the server holds it.
   */
  push(doc, ms) {
    const A = this.A
    const documentId = generateAutomergeUrl().replace(/^automerge:/, "")
    const heads = A.getHeads(doc).slice().sort().join(",")
    const [state, msg] = A.generateSyncMessage(doc, A.initSyncState())
    const p = new Promise((resolve, reject) => {
      const done = (_d, data) => A.decodeSyncMessage(data).heads.slice().sort().join(",") === heads
      this.pending.set(documentId, { doc, state, done, resolve, reject })
    })
    this.send({ type: "sync", senderId: this.peerId, targetId: this.remote, documentId, data: msg })
    return withTimeout(p, ms, `raw push ${documentId}`)
      .then(r => {
        if (!r.available) throw new HarnessError(`server answered doc-unavailable to our own new document ${documentId}`)
        return `automerge:${documentId}`
      })
      .finally(() => this.pending.delete(documentId))
  }

  close() {
    try { this.ws?.close() } catch { /* closing anyway */ }
  }
}
