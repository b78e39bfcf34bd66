// The crew app's data: the jobs on this phone (server view + queued edits, from
// /lib/sync/outbox.js), the workflow the server allows, and the actions a crew takes.
// Every action is one outbox call: its optimistic change and its outbox record commit in
// one IndexedDB transaction. Nothing here touches the DOM.

import { SyncClient, timeoutSignal } from "/lib/sync/client.js";
import * as db from "/lib/sync/db.js";
import * as outbox from "/lib/sync/outbox.js";

export { db, outbox };

export const client = new SyncClient();

// -- the workflow (GET /api/workflow), kept on this phone --------------------------------------
//
// The phone draws from the copy it keeps and asks the server for a fresh one in the
// background: a crew on one bar of signal (a request that never answers) sees its day at
// once. The first start has no copy: the job screen says so until the server answers.

const WORKFLOW_TIMEOUT_MS = 15_000;

let workflow = null;
let refreshing = null;

/** The workflow kept on this phone (IndexedDB only, never the network); null if none yet. */
export async function loadKeptWorkflow() {
  const kept = await db.readMeta(["workflow"]);
  workflow = kept.workflow || workflow;
  return workflow;
}

/** Ask the server for its workflow and keep it; true if it differs from the one in use.
 * False when the server does not answer within WORKFLOW_TIMEOUT_MS (the kept copy stays). */
export function refreshWorkflow() {
  refreshing ??= (async () => {
    try {
      const response = await fetch("/api/workflow", { cache: "no-store", signal: timeoutSignal(WORKFLOW_TIMEOUT_MS) });
      if (!response.ok) return false;
      const fresh = await response.json();
      await db.transaction(["meta"], "readwrite", (tx) => db.setMeta(tx, "workflow", fresh));
      const changed = JSON.stringify(fresh) !== JSON.stringify(workflow);
      workflow = fresh;
      return changed;
    } catch {
      return false; // no answer in time, or offline: the kept copy
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

export const getWorkflow = () => workflow;

/** The moves a crew may make from `status` (none before the workflow is known). */
export function movesFrom(status) {
  return workflow?.statuses.find((s) => s.code === status)?.crew_moves || [];
}

export function statusKind(status) {
  return workflow?.statuses.find((s) => s.code === status)?.kind || "open";
}

// -- jobs ------------------------------------------------------------------------------------

/** Each job's service type name, from the reference data the pull brought. */
async function typeNames() {
  const types = await outbox.listReference("service_type");
  return new Map(types.map((t) => [t.code, t.name]));
}

const dueTime = (job) => (job.sla_due_at ? Date.parse(job.sla_due_at) : Infinity);

/**
 * The route order: the dispatcher's (route_position, when the server sends one), else
 * emergencies first, then priority (1 is the most urgent), then the earliest due. Open jobs
 * before finished ones.
 */
export function routeOrder(a, b) {
  const open = (job) => (statusKind(job.status) === "open" && !job.leaving ? 0 : 1);
  return open(a) - open(b)
    || (a.route_position ?? Infinity) - (b.route_position ?? Infinity)
    || Number(b.emergency) - Number(a.emergency)
    || (a.priority ?? 9) - (b.priority ?? 9)
    || dueTime(a) - dueTime(b)
    || String(a.number).localeCompare(String(b.number));
}

/** The jobs on this phone in route order, each with `type_name`. */
export async function jobs() {
  const [list, names] = await Promise.all([outbox.listWorkOrders(), typeNames()]);
  for (const job of list) job.type_name = names.get(job.service_code) || job.service_code;
  return list.sort(routeOrder);
}

export async function job(id) {
  const [found, names] = await Promise.all([outbox.getWorkOrder(id), typeNames()]);
  if (found) found.type_name = names.get(found.service_code) || found.service_code;
  return found;
}

export function isOverdue(job, now = Date.now()) {
  return statusKind(job.status) === "open" && dueTime(job) < now;
}

/** Great-circle distance in metres (haversine). */
export function distance(from, lat, lon) {
  if (!from || typeof lat !== "number" || typeof lon !== "number") return null;
  const rad = Math.PI / 180;
  const dLat = (lat - from.lat) * rad;
  const dLon = (lon - from.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(from.lat * rad) * Math.cos(lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6_371_000 * Math.asin(Math.sqrt(h));
}

// -- actions (each one outbox transaction) ----------------------------------------------------

/** Move a job; `reason` is the chosen code's label and the crew's note, as residents read it. */
export function move(id, to, { reason } = {}) {
  const args = { work_order_id: id, to };
  if (reason) args.reason = reason.slice(0, 4000);
  return outbox.queueEdit("status", args);
}

export const addNote = (id, text) => outbox.queueEdit("note", { work_order_id: id, text });

export const addMaterial = (id, item, quantity, unit) =>
  outbox.queueEdit("material", { work_order_id: id, item, quantity, unit: unit || "each" });

export const addTime = (id, minutes, note = "") => outbox.queueEdit("time", { work_order_id: id, minutes, note });

export const addPhoto = (id, blob, caption = "") =>
  outbox.queuePhoto(blob, { work_order_id: id, caption });

/** A photo kept on this phone (until uploaded, and after), as an object URL; null if absent. */
export async function localPhotoUrl(sha256) {
  const blob = await db.transaction(["blobs"], "readonly", (tx) => db.get(tx, "blobs", sha256));
  return blob ? URL.createObjectURL(new Blob([blob.data], { type: blob.content_type })) : null;
}

const PHOTO_TIMEOUT_MS = 30_000;

/** A photo from the server (it needs the token, so no plain <img src>); null if unavailable. */
export async function serverPhotoUrl(sha256) {
  const { auth } = await db.readMeta(["auth"]);
  if (!auth) return null;
  try {
    const response = await fetch(`/sync/v1/blobs/${sha256}`, {
      headers: { Authorization: `Bearer ${auth.token}` }, signal: timeoutSignal(PHOTO_TIMEOUT_MS),
    });
    return response.ok ? URL.createObjectURL(await response.blob()) : null;
  } catch {
    return null;
  }
}

/** The sign-in kept on this phone, and whether it has expired. */
export async function session() {
  const { auth, client_user: user } = await db.readMeta(["auth", "client_user"]);
  const expired = Boolean(auth?.expires_at && Date.parse(auth.expires_at) <= Date.now());
  return { auth, user: auth?.user || user || null, expired };
}
