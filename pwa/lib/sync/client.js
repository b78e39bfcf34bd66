// SyncClient: sends the outbox and brings the crew's work orders down (protocol v1).
//
// One sync at a time per browser (Web Locks, else an in-page flag): upload the photos the
// outbox refers to, push the outbox in seq order in batches, then pull until has_more is
// false. Triggers: start, sign-in, `online`, page visible again, a server poke (SSE), a
// timer, a queued edit, and syncNow() ("Sync now"). Failures never drop an edit: network
// errors and 5xx retry with capped exponential backoff and jitter; 401 stops and asks for
// a new sign-in. navigator.onLine is never trusted: the client tries and handles failure.
//
// Events (EventTarget): "status" {unsynced, attention, syncing, lastError, lastErrorKind,
// lastSyncedAt, needsSignIn, paused, user, persisted, nextRetryAt}; "signin-required".

import {
  count, countFromIndex, del, get, getAll, getAllFromIndex, getMeta, put, readMeta, request,
  setMeta, transaction,
} from "./db.js";
import { liveOverlay, outboxEvents, pendingEdits } from "./outbox.js";

export const SCHEMA_VERSION = 1;
export const APP_VERSION = "fieldwork-pwa/0.1.0";
export const LOCK_NAME = "fieldwork-sync";
const MAX_BATCH = 500; // the server takes at most 500 mutations a push
const MAX_BATCH_BYTES = 900_000; // and refuses bodies over 1,000,000 bytes (UTF-8)
const PULL_LIMIT = 500;
const MAX_PULL_PAGES = 1000;
const REQUEST_TIMEOUT_MS = 30_000;
const utf8 = new TextEncoder();

/**
 * Why a sync stopped. `kind`:
 *   offline      no answer, a 5xx or a 429: retried by itself with backoff
 *   auth         401: sign in again (nothing is lost meanwhile)
 *   forbidden    403: the client id is bound to another user, or the account may not sync
 *   unsupported  409: the server wants a newer app
 *   refused      the server cannot read an edit (it stays in the outbox, needs attention)
 *   other_user   sign-in refused: another user's edits are still unsynced on this device
 *   server       any other unexpected answer: retried with backoff
 */
export class SyncError extends Error {
  constructor(message, { kind = "server", status = null, retryAfterMs = null, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "SyncError";
    this.kind = kind;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }

  get retryable() {
    return this.kind === "offline" || this.kind === "server";
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

/** An AbortSignal that aborts after `ms` (AbortSignal.timeout where the browser has it). */
export function timeoutSignal(ms) {
  if (typeof AbortSignal.timeout === "function") return AbortSignal.timeout(ms);
  const controller = new AbortController();
  setTimeout(() => controller.abort(new DOMException("timed out", "TimeoutError")), ms);
  return controller.signal;
}

function retryAfter(response) {
  const value = response.headers.get("Retry-After");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return seconds * 1000;
  const when = Date.parse(value);
  return Number.isFinite(when) ? Math.max(0, when - Date.now()) : null;
}

/** A job's data as the server sent it; when it sent only the events from `events_from` on
 * (an incremental pull), the ones the device already holds from before are kept. */
function withEarlierEvents(data, existing) {
  const from = data.events_from || 0;
  const before = existing?.data?.events;
  if (from <= 0 || !Array.isArray(before)) return data;
  const sent = new Set((data.events || []).map((event) => event.uid));
  const kept = before.filter((event) => (event.version ?? 0) < from && !sent.has(event.uid));
  return { ...data, events: [...kept, ...(data.events || [])], events_from: 0 };
}

async function errorDetail(response) {
  try {
    const body = await response.json();
    const field = body.field ? ` (${body.field})` : "";
    const extra = body.extra ? ` ${JSON.stringify(body.extra)}` : "";
    return `${body.detail || body.message || response.statusText}${field}${extra}`;
  } catch {
    return response.statusText || `HTTP ${response.status}`;
  }
}

export class SyncClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.baseUrl]     "" (same origin) or "https://host"
   * @param {number} [options.interval]    ms between timer syncs (0: no timer)
   * @param {boolean} [options.serverEvents] listen to /sync/v1/events for pokes
   * @param {boolean} [options.autoSync]   sync by itself (false: only syncNow())
   * @param {{base:number, cap:number}} [options.backoff] retry delays in ms
   * @param {typeof fetch} [options.fetch] a seam for tests
   */
  constructor({
    baseUrl = "", interval = 30_000, serverEvents = true, autoSync = true,
    backoff = { base: 1000, cap: 5 * 60_000 }, fetch: fetchImpl, appVersion = APP_VERSION,
  } = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.interval = interval;
    this.serverEvents = serverEvents;
    this.backoff = backoff;
    this.appVersion = appVersion;
    this._fetch = fetchImpl || ((...args) => globalThis.fetch(...args));
    this._state = {
      unsynced: 0, attention: 0, syncing: false, lastError: null, lastErrorKind: null,
      lastSyncedAt: null, needsSignIn: false, paused: !autoSync, user: null, persisted: null,
      nextRetryAt: null,
    };
    this._running = null;
    this._again = false;
    this._againAsked = false;
    this._inPageLock = false;
    this._failures = 0;
    this._retryTimer = null;
    this._intervalTimer = null;
    this._editTimer = null;
    this._events = null; // AbortController of the SSE reader
    this._started = false;
    this._listeners = [];
  }

  /** A snapshot of the status (the same as the last "status" event's detail). */
  get status() {
    return { ...this._state };
  }

  // -- life cycle ----------------------------------------------------------------------------

  /** Wire the triggers, ask for persistent storage and sync once. */
  async start() {
    if (this._started) return;
    this._started = true;
    const on = (target, type, handler) => {
      target.addEventListener(type, handler);
      this._listeners.push(() => target.removeEventListener(type, handler));
    };
    on(window, "online", () => this._trigger("online"));
    on(document, "visibilitychange", () => {
      if (document.visibilityState === "visible") this._trigger("visible");
    });
    on(outboxEvents, "change", () => {
      this._emit();
      clearTimeout(this._editTimer);
      this._editTimer = setTimeout(() => this._trigger("edit"), 300);
    });
    if (this.interval > 0) {
      this._intervalTimer = setInterval(() => {
        if (!this._state.nextRetryAt || Date.now() >= this._state.nextRetryAt) this._trigger("timer");
      }, this.interval);
    }
    this._state.persisted = await this._persist();
    const { auth } = await readMeta(["auth"]);
    this._state.user = auth?.user ?? null;
    this._state.needsSignIn = !auth;
    await this._emit();
    if (auth) {
      this._listenSafely();
      this._trigger("start");
    }
  }

  stop() {
    this._started = false;
    for (const remove of this._listeners.splice(0)) remove();
    clearInterval(this._intervalTimer);
    clearTimeout(this._retryTimer);
    clearTimeout(this._editTimer);
    this._events?.abort();
    this._events = null;
  }

  /** Automatic syncing off (syncNow() still works) or on. */
  pause() {
    this._state.paused = true;
    this._emit();
  }

  resume() {
    this._state.paused = false;
    this._emit();
    this._trigger("resume");
  }

  async _persist() {
    try {
      if (!navigator.storage?.persist) return null;
      if (await navigator.storage.persisted()) return true;
      return await navigator.storage.persist();
    } catch {
      return null;
    }
  }

  // -- signing in --------------------------------------------------------------------------

  /** Sign in and keep the token on the device; resolves with the user. */
  async signIn(username, password) {
    let response;
    try {
      response = await this._fetch(`${this.baseUrl}/api/auth/sign-in`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username, password }), cache: "no-store",
        signal: timeoutSignal(REQUEST_TIMEOUT_MS),
      });
    } catch (cause) {
      throw new SyncError("cannot reach the server to sign in", { kind: "offline", cause });
    }
    if (response.status === 401) throw new SyncError("wrong username or password", { kind: "auth", status: 401 });
    if (response.status === 429) {
      throw new SyncError("too many attempts: wait a few minutes", { kind: "auth", status: 429 });
    }
    if (!response.ok) {
      throw new SyncError(`sign-in failed: ${await errorDetail(response)}`, { status: response.status });
    }
    const { token, expires_at: expiresAt, user } = await response.json();
    if (user.role !== "crew") {
      throw new SyncError("this app syncs a crew's jobs: sign in with a crew member's account", { kind: "auth" });
    }
    await transaction(["meta", "outbox", "work_orders", "reference"], "readwrite", async (tx) => {
      const previous = await getMeta(tx, "client_user");
      if (previous && previous.id !== user.id) {
        const unsent = await count(tx, "outbox");
        if (unsent > 0) {
          throw new SyncError(`${unsent} edits by ${previous.username} are not synced yet: `
            + `${previous.username} must sign in and sync them first`, { kind: "other_user" });
        }
        // A new user on this device: a new client with its own seqs and its own scope.
        await setMeta(tx, "client_id", crypto.randomUUID());
        await setMeta(tx, "next_seq", 1);
        await setMeta(tx, "acked_seq", 0);
        await setMeta(tx, "cursor", null);
        tx.objectStore("work_orders").clear();
        tx.objectStore("reference").clear();
      }
      if (!(await getMeta(tx, "client_id"))) await setMeta(tx, "client_id", crypto.randomUUID());
      await setMeta(tx, "auth", { token, expires_at: expiresAt, user });
      await setMeta(tx, "client_user", { id: user.id, username: user.username, crew_id: user.crew_id ?? null });
    });
    Object.assign(this._state, { user, needsSignIn: false, lastError: null, lastErrorKind: null });
    this._failures = 0;
    await this._emit();
    if (this._started) this._listenSafely();
    this.syncNow({ reason: "sign-in" });
    return user;
  }

  /** Forget the token; the outbox, work orders and attention list stay on the device. */
  async signOut() {
    await transaction(["meta"], "readwrite", (tx) => del(tx, "meta", "auth"));
    this._events?.abort();
    this._events = null;
    Object.assign(this._state, { user: null, needsSignIn: true });
    await this._emit();
  }

  // -- syncing -------------------------------------------------------------------------------

  _trigger(reason) {
    if (!this._started || this._state.paused || this._state.needsSignIn) return;
    this.syncNow({ reason, automatic: true });
  }

  /**
   * Push, then pull. Never rejects: resolves {ok: true} or {ok: false, error}. A call while a
   * sync runs makes that sync go round once more (edits queued meanwhile are sent too);
   * an automatic one only while automatic sync is on.
   */
  syncNow({ reason = "button", automatic = false } = {}) {
    if (this._running) {
      this._again = true;
      if (!automatic) this._againAsked = true;
      return this._running;
    }
    this._running = (async () => {
      let outcome;
      try {
        do {
          this._again = false;
          this._againAsked = false;
          outcome = await this._exclusive(() => this._syncOnce(reason));
        } while (outcome.ok && this._again && (this._againAsked || !this._state.paused));
      } finally {
        this._running = null;
      }
      return outcome;
    })();
    return this._running;
  }

  /** Pull only (e.g. to refresh the day's jobs); same lock and error handling as syncNow. */
  pull() {
    return this._exclusive(() => this._syncOnce("pull", { push: false }));
  }

  async _exclusive(work) {
    if (navigator.locks?.request) {
      return navigator.locks.request(LOCK_NAME, () => work());
    }
    while (this._inPageLock) await sleep(50);
    this._inPageLock = true;
    try {
      return await work();
    } finally {
      this._inPageLock = false;
    }
  }

  async _syncOnce(reason, { push = true } = {}) {
    this._state.syncing = true;
    await this._emit();
    try {
      const { auth, client_id: clientId } = await readMeta(["auth", "client_id"]);
      if (!auth) throw new SyncError("sign in to sync", { kind: "auth" });
      const session = { token: auth.token, clientId };
      if (push) {
        await this._uploadBlobs(session);
        await this._push(session);
      }
      await this._pull(session);
      await this._sweep();
      this._failures = 0;
      clearTimeout(this._retryTimer);
      Object.assign(this._state, {
        lastError: null, lastErrorKind: null, lastSyncedAt: new Date().toISOString(), nextRetryAt: null,
      });
      return { ok: true, reason };
    } catch (caught) {
      const error = caught instanceof SyncError
        ? caught : new SyncError(caught?.message || String(caught), { kind: "server", cause: caught });
      this._failed(error);
      return { ok: false, reason, error };
    } finally {
      this._state.syncing = false;
      await this._emit();
    }
  }

  _failed(error) {
    Object.assign(this._state, { lastError: error.message, lastErrorKind: error.kind });
    if (error.kind === "auth") {
      this._state.needsSignIn = true;
      this._events?.abort();
      this._events = null;
      this.dispatchEvent(new CustomEvent("signin-required", { detail: { reason: error.message } }));
    }
    if (!error.retryable) return;
    this._failures += 1;
    const ceiling = Math.min(this.backoff.cap, this.backoff.base * 2 ** (this._failures - 1));
    let delay = ceiling / 2 + Math.random() * ceiling / 2; // jitter: phones do not retry in step
    if (error.retryAfterMs) delay = Math.max(delay, Math.min(error.retryAfterMs, this.backoff.cap));
    this._state.nextRetryAt = Date.now() + delay;
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._trigger("retry"), delay);
  }

  /** fetch with the token; throws SyncError for no answer, 401, 429 and 5xx. */
  async _call(session, method, path, { json, body, headers = {} } = {}) {
    const init = {
      method, cache: "no-store", signal: timeoutSignal(REQUEST_TIMEOUT_MS),
      headers: { Authorization: `Bearer ${session.token}`, ...headers },
    };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await this._fetch(`${this.baseUrl}${path}`, init);
    } catch (cause) {
      throw new SyncError("cannot reach the server: edits are kept on this device", { kind: "offline", cause });
    }
    if (response.status === 401) {
      throw new SyncError("sign in again to sync (edits are kept on this device)", { kind: "auth", status: 401 });
    }
    if (response.status === 429 || response.status >= 500) {
      throw new SyncError(`the server is busy or failing (HTTP ${response.status}): will retry`, {
        kind: "offline", status: response.status, retryAfterMs: retryAfter(response),
      });
    }
    return response;
  }

  // -- photos ----------------------------------------------------------------------------------

  /** Upload every photo an unsynced edit refers to, before the edit is pushed. */
  async _uploadBlobs(session) {
    const edits = await pendingEdits();
    const hashes = [...new Set(edits.filter((e) => e.name === "photo").map((e) => e.args.sha256))];
    for (const sha256 of hashes) {
      const blob = await transaction(["blobs"], "readonly", (tx) => get(tx, "blobs", sha256));
      if (!blob || blob.uploaded) continue;
      const path = `/sync/v1/blobs/${sha256}`;
      const head = await this._call(session, "HEAD", path);
      let uploaded = head.ok;
      let problem = null;
      if (!uploaded) {
        const response = await this._call(session, "PUT", path, {
          body: blob.data, headers: { "Content-Type": blob.content_type },
        });
        uploaded = response.ok;
        // A refused photo (too big, wrong type) is not retried for ever: the edit goes on
        // and the server's rejection puts it on the needs-attention list with its reason.
        if (!uploaded) problem = `photo upload refused: ${await errorDetail(response)}`;
      }
      await transaction(["blobs"], "readwrite", async (tx) => {
        const current = await get(tx, "blobs", sha256);
        if (!current) return;
        current.uploaded = uploaded;
        current.upload_error = problem;
        await put(tx, "blobs", current);
      });
    }
  }

  // -- push ------------------------------------------------------------------------------------

  async _push(session) {
    let limit = MAX_BATCH;
    for (;;) {
      const edits = await pendingEdits();
      if (edits.length === 0) return;
      const batch = [];
      let bytes = 0;
      for (const edit of edits) {
        const wire = { seq: edit.seq, mid: edit.mid, name: edit.name, args: edit.args, device_ts: edit.device_ts };
        const size = utf8.encode(JSON.stringify(wire)).length + 1; // bytes on the wire, not UTF-16 units
        if (batch.length >= limit || (batch.length > 0 && bytes + size > MAX_BATCH_BYTES)) break;
        batch.push({ edit, wire });
        bytes += size;
      }
      // "Sent" is bookkeeping (see _mark): it is written while the request travels. Its
      // transaction is created first, so IndexedDB commits it before the acknowledgement's.
      const marked = this._mark(batch.map((b) => b.edit.id), { state: "sent", sent: true });
      let response;
      try {
        response = await this._call(session, "POST", "/sync/v1/push", {
          json: {
            client_id: session.clientId, schema_version: SCHEMA_VERSION, app_version: this.appVersion,
            mutations: batch.map((b) => b.wire),
          },
        });
      } finally {
        await marked;
      }
      if (response.status === 413 || response.status === 400 || response.status === 422) {
        const detail = await errorDetail(response);
        if (batch.length > 1) { // find the edit the server cannot take: halve the batch
          limit = Math.max(1, Math.floor(batch.length / 2));
          await this._mark(batch.map((b) => b.edit.id), { state: "pending" });
          continue;
        }
        await this._mark([batch[0].edit.id], { state: "needs_attention", reason: `the server cannot take this edit: ${detail}` });
        throw new SyncError(`an edit is blocked: ${detail}`, { kind: "refused", status: response.status });
      }
      if (response.status === 403) {
        await this._mark(batch.map((b) => b.edit.id), { state: "pending" });
        throw new SyncError(`the server refuses this device's edits: ${await errorDetail(response)}`, { kind: "forbidden", status: 403 });
      }
      if (response.status === 409) {
        await this._mark(batch.map((b) => b.edit.id), { state: "pending" });
        throw new SyncError(`update the app: ${await errorDetail(response)}`, { kind: "unsupported", status: 409 });
      }
      if (!response.ok) {
        throw new SyncError(`push failed: HTTP ${response.status} ${await errorDetail(response)}`, { status: response.status });
      }
      const answer = await response.json();
      const progress = await this._acknowledge(batch.map((b) => b.edit), answer);
      if (!progress) {
        throw new SyncError("the server acknowledged nothing: will retry", { kind: "server" });
      }
    }
  }

  _mark(ids, { state, reason, sent = false }) {
    // "Sent" is bookkeeping (attempts, last try): lost in a crash, the edit is sent again and
    // the server answers the duplicate; so it need not wait for the disk.
    return transaction(["outbox"], "readwrite", async (tx) => {
      const records = await Promise.all(ids.map((id) => get(tx, "outbox", id))); // read at once
      const now = new Date().toISOString();
      await Promise.all(records.filter(Boolean).map((record) => {
        record.state = state;
        if (reason !== undefined) record.reason = reason;
        if (sent) {
          record.attempts = (record.attempts || 0) + 1;
          record.last_sent_at = now;
        }
        return put(tx, "outbox", record);
      }));
    }, { durability: sent ? "relaxed" : "strict" });
  }

  /**
   * Apply a push answer in one transaction: acknowledged edits leave the outbox, rejected
   * and conflicting ones move to the attention list, a gap renumbers. True if anything moved.
   */
  _acknowledge(batch, answer) {
    const results = new Map((answer.results || []).map((r) => [r.seq, r]));
    const lastSeq = Number(answer.last_seq ?? 0);
    return transaction(["outbox", "attention", "work_orders", "meta"], "readwrite", async (tx) => {
      let progress = false;
      const answeredAt = new Date().toISOString();
      // Everything the answer touches is read at once, written at once (see _applyChanges).
      // The batch's records by one range read, not one request each (each is a trip to the
      // browser's storage process); a record no longer there is skipped, as before.
      const ids = batch.map((sent) => sent.id);
      const range = IDBKeyRange.bound(Math.min(...ids), Math.max(...ids));
      const inRange = await getAll(tx, "outbox", range);
      const byId = new Map(inRange.map((record) => [record.id, record]));
      const records = ids.map((id) => byId.get(id));
      const done = []; // outbox ids answered: they leave the outbox
      const orderIds = [...new Set(records.filter(Boolean).map((r) => r.work_order_id).filter(Boolean))];
      const held = await Promise.all(orderIds.map((id) => get(tx, "work_orders", id)));
      const orders = new Map(orderIds.map((id, i) => [id, held[i]]));
      const changed = new Set();
      const writes = [];
      for (const record of records) {
        if (!record) continue;
        const result = results.get(record.seq);
        const order = record.work_order_id ? orders.get(record.work_order_id) : undefined;
        // A duplicate (an answer lost on the way, the edit sent again) carries what its first
        // delivery got: a rejection we never heard of still reaches the attention list.
        const outcome = result?.status === "duplicate" ? result.original_status || "applied" : result?.status;
        if (outcome === "rejected" || outcome === "conflict") {
          const existing = await request(tx.objectStore("attention").index("mid").get(record.mid));
          if (!existing) {
            writes.push(put(tx, "attention", {
              mid: record.mid, seq: record.seq, name: record.name, args: record.args,
              device_ts: record.device_ts, work_order_id: record.work_order_id,
              status: outcome, delivery: result.status, reason: result.reason || (outcome === "conflict"
                ? "the server kept its own value; yours is kept for a dispatcher to review"
                : "kept for a dispatcher to review"),
              result: result.result ?? null, server_version: result.server_version ?? null,
              answered_at: answeredAt,
            }));
          }
          done.push(record.id);
          // Refused: its optimistic effect goes.
          if (order?.pending?.some((p) => p.mid === record.mid)) {
            order.pending = order.pending.filter((p) => p.mid !== record.mid);
            changed.add(record.work_order_id);
          }
          progress = true;
        } else if (result || record.seq <= lastSeq) {
          done.push(record.id); // applied or seen before: done
          // An applied edit stays on the screen until a pull brings the version it made.
          const entry = order?.pending?.find((p) => p.mid === record.mid);
          if (entry) {
            entry.acked = true;
            entry.server_version = result?.server_version ?? null;
            changed.add(record.work_order_id);
          }
          progress = true;
        } else if (record.state === "sent") {
          record.state = "pending"; // past a gap: not looked at, sent again
          writes.push(put(tx, "outbox", record));
        }
      }
      for (const id of changed) writes.push(put(tx, "work_orders", orders.get(id)));
      if (done.length > 0 && done.length === inRange.length) writes.push(del(tx, "outbox", range)); // the whole range
      else for (const id of done) writes.push(del(tx, "outbox", id));
      await Promise.all(writes);
      const acked = await getMeta(tx, "acked_seq", 0);
      if (lastSeq > acked) await setMeta(tx, "acked_seq", lastSeq);
      if (answer.expected_seq !== undefined && answer.expected_seq !== null) {
        progress = (await this._resequence(tx, Number(answer.expected_seq))) || progress;
      }
      return progress;
    });
  }

  /**
   * The server expects `expected` next. If the outbox starts later than that, the server
   * has lost seqs this device can no longer send (a restored backup): number the unsent
   * edits from `expected` on, in the same order, so the queue moves again.
   */
  async _resequence(tx, expected) {
    const records = await getAllFromIndex(tx, "outbox", "seq");
    if (records.length === 0 || records[0].seq <= expected) return false;
    let seq = expected;
    for (const record of records) {
      record.previous_seq = record.previous_seq ?? record.seq;
      record.seq = seq;
      seq += 1;
      await put(tx, "outbox", record);
    }
    await setMeta(tx, "next_seq", seq);
    return true;
  }

  // -- pull ------------------------------------------------------------------------------------

  async _pull(session) {
    let { cursor } = await readMeta(["cursor"]);
    let priming = !cursor;
    const seen = new Set();
    for (let page = 0; page < MAX_PULL_PAGES; page += 1) {
      const response = await this._call(session, "POST", "/sync/v1/pull", {
        json: { client_id: session.clientId, cursor: cursor ?? null, limit: PULL_LIMIT },
      });
      if ((response.status === 400 || response.status === 422) && cursor) {
        cursor = null; // a cursor the server no longer knows: prime again from scratch
        priming = true;
        seen.clear();
        continue;
      }
      if (response.status === 403) {
        throw new SyncError(`the server refuses to send this device's jobs: ${await errorDetail(response)}`, { kind: "forbidden", status: 403 });
      }
      if (!response.ok) {
        throw new SyncError(`pull failed: HTTP ${response.status} ${await errorDetail(response)}`, { status: response.status });
      }
      const answer = await response.json();
      // While priming, the cursor is kept only with the end of it (in _forgetUnseen): a
      // priming cut short starts again, else the next pull would go on from the middle and
      // never learn which jobs the server no longer sends.
      await this._applyChanges(answer.changes || [], priming ? undefined : answer.cursor, seen);
      cursor = answer.cursor;
      if (!answer.has_more) break;
    }
    if (priming) await this._forgetUnseen(seen, cursor);
  }

  /**
   * One page of changes and its cursor, in one transaction. The page's reads are issued at
   * once (the jobs it names, the outbox) and its writes without waiting for each other: a
   * request awaited one by one costs a trip through the event loop each, which made priming
   * 1,000 jobs several times slower than writing them.
   */
  _applyChanges(changes, cursor, seen) {
    return transaction(["work_orders", "reference", "outbox", "meta"], "readwrite", async (tx) => {
      const ids = [...new Set(changes.filter((c) => c.entity === "work_order").map((c) => String(c.id)))];
      const [held, queued] = await Promise.all([
        Promise.all(ids.map((id) => get(tx, "work_orders", id))), getAll(tx, "outbox"),
      ]);
      const existing = new Map(ids.map((id, i) => [id, held[i]]));
      const unsent = new Map(); // work order id -> mids of its edits still in the outbox
      for (const record of queued) {
        if (!unsent.has(record.work_order_id)) unsent.set(record.work_order_id, new Set());
        unsent.get(record.work_order_id).add(record.mid);
      }
      const writes = [];
      const receivedAt = new Date().toISOString();
      for (const change of changes) {
        const id = String(change.id);
        if (change.entity === "work_order") {
          const before = existing.get(id);
          if (change.op === "upsert" && change.data) {
            seen.add(id);
            const record = {
              id, version: change.version ?? change.data.version ?? null, data: withEarlierEvents(change.data, before),
              pending: before?.pending || [], received_at: receivedAt,
            };
            record.pending = liveOverlay(record, unsent.get(id) || new Set());
            existing.set(id, record); // a later change to it in this page builds on this one
            writes.push(put(tx, "work_orders", record));
          } else {
            seen.delete(id);
            if (!before) continue;
            // A job leaves the device only once none of its edits is waiting in the outbox.
            if ((unsent.get(id)?.size || 0) > 0) {
              before.removed = change.op === "delete" ? "delete" : "evict";
              writes.push(put(tx, "work_orders", before));
            } else {
              existing.set(id, undefined);
              writes.push(del(tx, "work_orders", id));
            }
          }
        } else if (change.entity === "service_type" || change.entity === "crew") {
          seen.add(`${change.entity}:${id}`);
          if (change.op === "upsert" && change.data) {
            writes.push(put(tx, "reference", { entity: change.entity, id, version: change.version ?? null, data: change.data }));
          } else {
            writes.push(del(tx, "reference", [change.entity, id]));
          }
        } // an entity this version does not know: ignored (a newer server)
      }
      if (cursor !== undefined) writes.push(setMeta(tx, "cursor", cursor ?? null));
      await Promise.all(writes);
    });
  }

  /** A job leaves the device only once none of its edits is waiting in the outbox. */
  async _leave(tx, order, why) {
    if (!order) return;
    const waiting = await countFromIndex(tx, "outbox", "work_order_id", order.id);
    if (waiting > 0) {
      order.removed = why;
      await put(tx, "work_orders", order);
    } else {
      await del(tx, "work_orders", order.id);
    }
  }

  /** After a full priming (a new device, or a cursor the server refused: another or a
   * restored database, a compacted feed): what the server did not send is not ours any
   * more. Jobs with unsent edits stay until those are acknowledged. The priming's cursor
   * is kept in the same transaction. */
  _forgetUnseen(seen, cursor) {
    return transaction(["work_orders", "outbox", "reference", "meta"], "readwrite", async (tx) => {
      await setMeta(tx, "cursor", cursor ?? null);
      // Keys first: only the few unseen jobs are read whole.
      for (const id of await request(tx.objectStore("work_orders").getAllKeys())) {
        if (!seen.has(id)) await this._leave(tx, await get(tx, "work_orders", id), "evict");
      }
      for (const item of await getAll(tx, "reference")) {
        if (!seen.has(`${item.entity}:${item.id}`)) await del(tx, "reference", [item.entity, item.id]);
      }
    });
  }

  /** After push and pull: drop overlays the server view has caught up with, let removed jobs go. */
  _sweep() {
    return transaction(["work_orders", "outbox"], "readwrite", async (tx) => {
      const unsent = new Map();
      for (const record of await getAll(tx, "outbox")) {
        if (!unsent.has(record.work_order_id)) unsent.set(record.work_order_id, new Set());
        unsent.get(record.work_order_id).add(record.mid);
      }
      for (const order of await getAll(tx, "work_orders")) {
        const mids = unsent.get(order.id) || new Set();
        if (order.removed && mids.size === 0) {
          await del(tx, "work_orders", order.id);
          continue;
        }
        const pending = liveOverlay(order, mids);
        if (pending.length !== (order.pending || []).length) {
          order.pending = pending;
          await put(tx, "work_orders", order);
        }
      }
    });
  }

  // -- server pokes (SSE over fetch, so the token stays in a header) --------------------------

  _listenSafely() {
    this._listen().catch(() => { this._events = null; });
  }

  async _listen() {
    if (!this.serverEvents || this._events) return;
    const controller = new AbortController();
    this._events = controller;
    const { signal } = controller;
    let failures = 0;
    while (!signal.aborted) {
      const { auth } = await readMeta(["auth"]);
      if (!auth) break;
      let wait;
      // One connection: it ends with the reader, or when no answer (headers) came in time
      // (a request that hangs is retried like a refused one).
      const attempt = new AbortController();
      const stop = () => attempt.abort();
      signal.addEventListener("abort", stop, { once: true });
      const unanswered = setTimeout(stop, REQUEST_TIMEOUT_MS);
      try {
        const response = await this._fetch(`${this.baseUrl}/sync/v1/events`, {
          headers: { Authorization: `Bearer ${auth.token}`, Accept: "text/event-stream" },
          cache: "no-store", signal: attempt.signal,
        });
        clearTimeout(unanswered);
        if (response.status === 401) break; // the next sync asks for a sign-in
        if (!response.ok || !response.body) {
          wait = response.status === 404 ? 5 * 60_000 : null; // no event stream: timers suffice
        } else {
          if (failures > 0) this._trigger("reconnected"); // pokes may have been missed
          failures = 0;
          wait = await this._readEvents(response.body, attempt.signal);
        }
      } catch {
        if (signal.aborted) break;
      } finally {
        clearTimeout(unanswered);
        signal.removeEventListener("abort", stop);
      }
      failures += 1;
      const ceiling = Math.min(this.backoff.cap, this.backoff.base * 2 ** Math.min(failures, 16));
      await sleep(wait ?? (ceiling / 2 + Math.random() * ceiling / 2), signal);
    }
    if (this._events === controller) this._events = null;
  }

  /** Read one event stream until it ends; returns the server's `retry:` hint, if any. */
  async _readEvents(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let name = "message";
    let retry = null;
    try {
      while (!signal.aborted) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (name === "pull") this._trigger("poke");
            name = "message";
          } else if (line.startsWith("event:")) {
            name = line.slice(6).trim();
          } else if (line.startsWith("retry:")) {
            const ms = Number(line.slice(6).trim());
            if (Number.isFinite(ms)) retry = ms;
          } // "data:", "id:" and ":" comments carry nothing we need
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
    return retry;
  }

  // -- status ------------------------------------------------------------------------------------

  async _emit() {
    try {
      const [unsynced, attention] = await transaction(["outbox", "attention"], "readonly", (tx) =>
        Promise.all([count(tx, "outbox"), count(tx, "attention")]));
      this._state.unsynced = unsynced;
      this._state.attention = attention;
    } catch {
      // the counts stay as they were; the status still goes out
    }
    this.dispatchEvent(new CustomEvent("status", { detail: this.status }));
  }
}

