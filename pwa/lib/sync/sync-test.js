// The sync check page (sync-test.html): a thin screen over SyncClient and the outbox.

import { SyncClient } from "./client.js";
import * as db from "./db.js";
import * as outbox from "./outbox.js";

const { readMeta } = db;
const $ = (id) => document.getElementById(id);
const client = new SyncClient();
window.fieldworkSync = { client, outbox, db }; // for diagnostics and browser tests

function text(tag, value) {
  const node = document.createElement(tag);
  node.textContent = value ?? "";
  return node;
}

function describe(edit) {
  const { name, args } = edit;
  if (name === "status") return `status → ${args.to}`;
  if (name === "note" || name === "notes") return `${name}: “${args.text}”`;
  return name;
}

async function render(status = client.status) {
  $("unsynced-count").textContent = String(status.unsynced);
  $("signed-in-as").textContent = status.user
    ? `Signed in as ${status.user.username}${status.needsSignIn ? " (sign in again to sync)" : ""}.`
    : "Not signed in.";
  const state = status.syncing ? "Syncing…"
    : status.lastSyncedAt ? `Last synced ${new Date(status.lastSyncedAt).toLocaleTimeString()}.` : "Not synced yet.";
  $("sync-state").textContent = state + (status.paused ? " Automatic sync is off." : "");
  $("sync-error").textContent = status.lastError ? `Last error: ${status.lastError}` : "";

  const [attention, orders, pending, meta] = await Promise.all([
    outbox.needsAttention(), outbox.listWorkOrders(), outbox.pendingEdits(),
    readMeta(["client_id", "next_seq", "acked_seq", "cursor"]),
  ]);
  $("attention-count").textContent = String(attention.length);
  $("attention").replaceChildren(...attention.map((item) => {
    const li = text("li", `Work order ${item.args?.work_order_id}: ${describe(item)} — ${item.status}: ${item.reason}`);
    li.dataset.mid = item.mid;
    return li;
  }));
  orders.sort((a, b) => a.id - b.id);
  $("orders-count").textContent = String(orders.length);
  $("orders").replaceChildren(...orders.map((order) => {
    const tr = document.createElement("tr");
    tr.dataset.id = String(order.id);
    tr.append(text("td", order.id), text("td", order.number), text("td", order.status),
      text("td", order.pending_edits ? `${order.pending_edits}${order.leaving ? " (leaving after sync)" : ""}` : ""),
      text("td", order.address));
    return tr;
  }));
  $("pending").replaceChildren(...pending.map((edit) => {
    const li = text("li", `#${edit.seq} work order ${edit.args.work_order_id}: ${describe(edit)} (${edit.state}${edit.reason ? `: ${edit.reason}` : ""})`);
    li.dataset.seq = String(edit.seq);
    return li;
  }));
  const facts = {
    "Client id": meta.client_id, "Next seq": meta.next_seq ?? 1, "Acknowledged up to seq": meta.acked_seq ?? 0,
    "Cursor": meta.cursor ?? "(not primed)", "Persistent storage": String(status.persisted),
    "Web Locks": navigator.locks ? "yes" : "no (in-page lock)", "navigator.onLine (not trusted)": String(navigator.onLine),
  };
  $("diagnostics").replaceChildren(...Object.entries(facts).flatMap(([k, v]) => [text("dt", k), text("dd", v)]));
  document.body.dataset.syncing = String(status.syncing);
}

let rendering = Promise.resolve();
client.addEventListener("status", (event) => {
  rendering = rendering.then(() => render(event.detail)).catch((error) => console.error(error));
});

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  try {
    await client.signIn($("username").value, $("password").value);
    $("password").value = "";
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
});
$("signout").addEventListener("click", () => client.signOut());
$("sync-now").addEventListener("click", () => client.syncNow({ reason: "button" }));
$("auto-sync").addEventListener("change", (event) => {
  if (event.target.checked) client.resume();
  else client.pause();
});

$("edit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const workOrderId = Number($("edit-order").value);
  const kind = $("edit-kind").value;
  const value = $("edit-text").value.trim();
  try {
    const record = kind === "status"
      ? await outbox.queueEdit("status", { work_order_id: workOrderId, to: value })
      : await outbox.queueEdit("note", { work_order_id: workOrderId, text: value });
    $("edit-result").textContent = `Queued edit #${record.seq} for work order ${workOrderId}.`;
    $("edit-text").value = "";
  } catch (error) {
    $("edit-result").textContent = `Not queued: ${error.message}`;
  }
});

client.start().catch((error) => { $("sync-error").textContent = `Cannot start: ${error.message}`; });
