// The outbox: every edit a crew makes is written to IndexedDB first, together with its
// optimistic effect on the work order, in ONE transaction; SyncClient sends them later, in
// seq order. Nothing here talks to the network.

import {
  add, count, get, getAll, getAllFromIndex, getMeta, orderKey, put, setMeta, transaction,
} from "./db.js";

/** Mutation names of protocol v1 and the arguments each requires. */
export const MUTATIONS = {
  status: ["work_order_id", "to"],
  note: ["work_order_id", "uid", "text"],
  photo: ["work_order_id", "uid", "sha256"],
  material: ["work_order_id", "uid", "item", "quantity"],
  time: ["work_order_id", "uid", "minutes"],
  notes: ["work_order_id", "text"], // base_version: given, or the version the device shows
  request: ["work_order_id", "field"], // value (may be null) and reason ride along
};
const FACTS = new Set(["note", "photo", "material", "time"]);
export const PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp"];

/** Tells this page and other tabs that the outbox changed ("change" events). */
export const outboxEvents = new EventTarget();
const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("fieldwork-outbox") : null;
if (channel) channel.onmessage = () => outboxEvents.dispatchEvent(new Event("change"));

export function announceChange() {
  outboxEvents.dispatchEvent(new Event("change"));
  if (channel) channel.postMessage("change");
}

function prepare(name, args) {
  const required = MUTATIONS[name];
  if (!required) throw new TypeError(`unknown edit ${JSON.stringify(name)}`);
  const prepared = { ...args };
  if (FACTS.has(name) && !prepared.uid) prepared.uid = crypto.randomUUID();
  for (const field of required) {
    if (prepared[field] === undefined || prepared[field] === null || prepared[field] === "") {
      throw new TypeError(`${name} needs ${field}`);
    }
  }
  if (prepared.work_order_id !== undefined) prepared.work_order_id = Number(prepared.work_order_id);
  if (!Number.isInteger(prepared.work_order_id) || prepared.work_order_id < 1) {
    throw new TypeError(`${name} needs a work order id`);
  }
  return prepared;
}

/** Inside `tx` (outbox, meta, work_orders): take the next seq, add the record and the overlay. */
async function enqueue(tx, name, args, optimistic) {
  const seq = await getMeta(tx, "next_seq", 1);
  await setMeta(tx, "next_seq", seq + 1);
  const record = {
    seq,
    mid: crypto.randomUUID(),
    name,
    args,
    device_ts: new Date().toISOString(),
    work_order_id: orderKey(args.work_order_id),
    state: "pending",
    attempts: 0,
  };
  const order = await get(tx, "work_orders", record.work_order_id);
  if (name === "notes" && (args.base_version === undefined || args.base_version === null)) {
    // The version the crew saw: the server's, plus its own notes edits still on the way
    // (each of which the server will count when it applies it).
    if (!order) throw new TypeError("notes needs base_version for a work order not on this device");
    const queued = await getAllFromIndex(tx, "outbox", "work_order_id", record.work_order_id);
    const mine = new Set([...(order.pending || []), ...queued].filter((e) => e.name === "notes").map((e) => e.mid));
    record.args = args = { ...args, base_version: (order.data?.notes_version ?? 0) + mine.size };
  }
  record.id = await add(tx, "outbox", record);
  if (optimistic && order) {
    order.pending = [...(order.pending || []), { mid: record.mid, seq, name, args, device_ts: record.device_ts }];
    await put(tx, "work_orders", order);
  }
  return record;
}

/**
 * Queue one edit: its optimistic change to the work order and its outbox record commit
 * together or not at all. Resolves with the outbox record ({id, seq, mid, ...}).
 * `optimistic: false` queues without showing the change on the device's copy.
 */
export async function queueEdit(name, args, { optimistic = true } = {}) {
  const prepared = prepare(name, args);
  const record = await transaction(["outbox", "meta", "work_orders"], "readwrite",
    (tx) => enqueue(tx, name, prepared, optimistic));
  announceChange();
  return record;
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Keep a photo (File or Blob) on the device as an ArrayBuffer under its sha256, and queue
 * the `photo` edit that refers to it, in one transaction. The client uploads the bytes
 * before it pushes the edit.
 */
export async function queuePhoto(file, args, { optimistic = true } = {}) {
  const contentType = file.type;
  if (!PHOTO_TYPES.includes(contentType)) {
    throw new TypeError(`a photo must be ${PHOTO_TYPES.join(", ")}, not ${contentType || "unknown"}`);
  }
  const data = await file.arrayBuffer(); // everything slow happens before the transaction
  const sha256 = hex(await crypto.subtle.digest("SHA-256", data));
  const prepared = prepare("photo", { ...args, sha256 });
  const record = await transaction(["outbox", "meta", "work_orders", "blobs"], "readwrite", async (tx) => {
    const existing = await get(tx, "blobs", sha256);
    if (!existing) {
      await put(tx, "blobs", { sha256, content_type: contentType, size: data.byteLength, data, uploaded: false });
    }
    return enqueue(tx, "photo", prepared, optimistic);
  });
  announceChange();
  return record;
}

/** How many edits are on this device and not yet acknowledged by the server. */
export function unsyncedCount() {
  return transaction(["outbox"], "readonly", (tx) => count(tx, "outbox"));
}

/** The unacknowledged edits, in seq order. */
export function pendingEdits() {
  return transaction(["outbox"], "readonly", (tx) => bySeq(tx));
}

function bySeq(tx) {
  return getAllFromIndex(tx, "outbox", "seq");
}

/**
 * Edits that need a person: rejected or conflicting edits the server answered (kept here,
 * never deleted), then edits the server refuses to even read (state "needs_attention").
 */
export function needsAttention() {
  return transaction(["attention", "outbox"], "readonly", async (tx) => {
    const answered = await getAll(tx, "attention");
    const stuck = (await bySeq(tx)).filter((r) => r.state === "needs_attention")
      .map((r) => ({ ...r, status: "blocked", id: undefined, outbox_id: r.id }));
    return [...answered, ...stuck];
  });
}

/**
 * Which overlay entries of a work order `record` still count: edits still in the outbox
 * (`unsent`: a Set of mids), and acknowledged edits whose effect the device's server view
 * does not show yet (its version is below the one the push answered with; a pull can
 * come later than the push, e.g. while PostgreSQL holds the feed back).
 */
export function liveOverlay(record, unsent) {
  const version = record.version ?? record.data?.version ?? 0;
  return (record.pending || []).filter((entry) => unsent.has(entry.mid)
    || (entry.acked && entry.server_version !== null && entry.server_version !== undefined
      && version < entry.server_version));
}

/** Apply the pending edits of a work order record on top of its server view. */
export function overlay(record) {
  const view = { ...(record.data || {}), id: record.data?.id ?? Number(record.id) };
  const pending = record.pending || [];
  view.pending_edits = pending.filter((edit) => !edit.acked).length;
  view.pending_facts = [];
  for (const edit of pending) {
    const { name, args } = edit;
    if (name === "status") view.status = args.to;
    else if (name === "notes") view.notes = args.text;
    else if (FACTS.has(name)) {
      view.pending_facts.push({ kind: name, uid: args.uid, data: args, occurred_at: edit.device_ts, pending: !edit.acked });
    }
  }
  if (record.removed) view.leaving = record.removed; // leaves once its edits are acknowledged
  return view;
}

/** The work orders on this device, as the crew should see them (server view + overlay). */
export function listWorkOrders() {
  return transaction(["work_orders"], "readonly", async (tx) => (await getAll(tx, "work_orders")).map(overlay));
}

export function getWorkOrder(id) {
  return transaction(["work_orders"], "readonly", async (tx) => {
    const record = await get(tx, "work_orders", orderKey(id));
    return record ? overlay(record) : null;
  });
}

/** Reference data on the device: service types or crews. */
export function listReference(entity) {
  return transaction(["reference"], "readonly", async (tx) =>
    (await getAll(tx, "reference")).filter((r) => r.entity === entity).map((r) => r.data));
}
