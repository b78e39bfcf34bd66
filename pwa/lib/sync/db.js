// The device's IndexedDB database, hand-written promise wrappers and nothing else.
//
//   outbox       one record per edit, auto-increment key; indexes: seq (unique), work_order_id
//                {id, seq, mid, name, args, device_ts, work_order_id, state, reason?, attempts}
//                state: "pending" (not sent yet) | "sent" (sent, no answer yet)
//                       | "needs_attention" (the server refuses the request it is in: a client bug)
//   meta         {key, value}: client_id, next_seq, acked_seq, cursor, auth, client_user
//   work_orders  {id: "123" (string), version, data (the server view), pending: [edits not
//                yet acknowledged, the optimistic overlay], removed?: "evict"|"delete"}
//   reference    {entity, id, version, data}: service types and crews
//   blobs        {sha256, content_type, size, data: ArrayBuffer, uploaded: boolean}
//   attention    rejected and conflicting edits, kept visible (auto-increment key; index mid)
//
// Rules (see STYLE.md, PWAs): one record per edit, bodies as ArrayBuffer, nothing unrelated
// awaited inside a transaction, schema upgraded step by step.

export const DB_NAME = "fieldwork";
export const DB_VERSION = 1;
export const STORES = ["outbox", "meta", "work_orders", "reference", "blobs", "attention"];

function upgrade(db, oldVersion) {
  if (oldVersion < 1) {
    const outbox = db.createObjectStore("outbox", { keyPath: "id", autoIncrement: true });
    outbox.createIndex("seq", "seq", { unique: true });
    outbox.createIndex("work_order_id", "work_order_id", { unique: false });
    db.createObjectStore("meta", { keyPath: "key" });
    db.createObjectStore("work_orders", { keyPath: "id" });
    db.createObjectStore("reference", { keyPath: ["entity", "id"] });
    db.createObjectStore("blobs", { keyPath: "sha256" });
    const attention = db.createObjectStore("attention", { keyPath: "id", autoIncrement: true });
    attention.createIndex("mid", "mid", { unique: true });
  }
  // if (oldVersion < 2) { ... }   one step per version, never rewrite an earlier step
}

/** A promise for an IDBRequest's result. */
export function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Open (and upgrade) a database; the connection closes itself when a newer version wants in. */
export function openDatabase(name = DB_NAME) {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(name, DB_VERSION);
    req.onupgradeneeded = (event) => upgrade(req.result, event.oldVersion);
    req.onsuccess = () => {
      const db = req.result;
      db.onversionchange = () => db.close(); // let another tab with a newer app upgrade
      resolve(db);
    };
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("close the other Fieldwork tabs: the database is being upgraded"));
  });
}

let shared = null;

/** The page's one connection to the `fieldwork` database. */
export function database() {
  if (!shared) {
    shared = openDatabase().then((db) => {
      db.addEventListener("close", () => { shared = null; });
      db.addEventListener("versionchange", () => { shared = null; });
      return db;
    }, (error) => {
      shared = null;
      throw error;
    });
  }
  return shared;
}

/**
 * Run `body(tx)` in one transaction and resolve with its result once the transaction has
 * committed (rejects, and aborts, if body throws or any request fails). `body` may await the
 * transaction's own requests, never anything else. Writes are flushed to disk before the
 * promise resolves ("strict"); bookkeeping that may be lost in a crash can ask for "relaxed".
 */
export async function transaction(storeNames, mode, body, { durability = "strict" } = {}) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const options = mode === "readwrite" ? { durability } : undefined;
    const tx = db.transaction(storeNames, mode, options);
    let result;
    let failed = false;
    const fail = (error) => {
      if (failed) return;
      failed = true;
      try { tx.abort(); } catch { /* already finished */ }
      reject(error);
    };
    tx.oncomplete = () => { if (!failed) resolve(result); };
    tx.onerror = (event) => fail(event.target.error || tx.error);
    tx.onabort = () => fail(tx.error || new DOMException("transaction aborted", "AbortError"));
    try {
      Promise.resolve(body(tx)).then((value) => { result = value; }, fail);
    } catch (error) {
      fail(error);
    }
  });
}

// -- small helpers for use inside a transaction ----------------------------------------------

export const get = (tx, store, key) => request(tx.objectStore(store).get(key));
export const put = (tx, store, value) => request(tx.objectStore(store).put(value));
export const add = (tx, store, value) => request(tx.objectStore(store).add(value));
export const del = (tx, store, key) => request(tx.objectStore(store).delete(key));
export const getAll = (tx, store, query) => request(tx.objectStore(store).getAll(query));
export const count = (tx, store, query) => request(tx.objectStore(store).count(query));
export const getAllFromIndex = (tx, store, index, query) =>
  request(tx.objectStore(store).index(index).getAll(query));
export const countFromIndex = (tx, store, index, query) =>
  request(tx.objectStore(store).index(index).count(query));

export async function getMeta(tx, key, fallback = undefined) {
  const row = await get(tx, "meta", key);
  return row === undefined ? fallback : row.value;
}

export function setMeta(tx, key, value) {
  return put(tx, "meta", { key, value });
}

/** Read several meta keys in one read-only transaction: {key: value}. */
export function readMeta(keys) {
  return transaction(["meta"], "readonly", async (tx) => {
    const values = await Promise.all(keys.map((key) => getMeta(tx, key)));
    return Object.fromEntries(keys.map((key, i) => [key, values[i]]));
  });
}

/** The device's client id (made once, on first use). */
export function clientId() {
  return transaction(["meta"], "readwrite", async (tx) => {
    let id = await getMeta(tx, "client_id");
    if (!id) {
      id = crypto.randomUUID();
      await setMeta(tx, "client_id", id);
    }
    return id;
  });
}

/** Work-order keys are strings on the device ("123"), whatever the caller holds. */
export function orderKey(id) {
  return id === undefined || id === null ? null : String(id);
}
