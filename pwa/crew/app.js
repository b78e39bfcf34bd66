// The crew app: start-up, the always-visible sync bar, the views (#/jobs, #/map, #/job/N,
// #/attention, #/signin), the service worker's "ready offline" / "update available", and
// "notify me". Data and actions live in store.js; each view in views/.

import { timeoutSignal } from "/lib/sync/client.js";
import { outboxEvents } from "/lib/sync/outbox.js";
import * as store from "./store.js";
import { $, h, i18n, relative, t, time } from "./ui.js";
import { renderAttention } from "./views/attention.js";
import { renderJob, shownJob } from "./views/job.js";
import { renderList } from "./views/list.js";
import { renderMap } from "./views/map.js";

const LANGUAGES = [{ code: "en", name: "English" }, { code: "es", name: "Español" }];
const LAST_SYNC_KEY = "fieldwork.crew.last-sync";
const VIEWS = ["signin", "jobs", "map", "job", "attention"];
const REQUEST_MS = 30_000; // "notify me": a request that never answers says "failed"
const { client } = store;
window.fieldworkCrew = { client, store, outbox: store.outbox, db: store.db }; // diagnostics and tests

let status = client.status;
let position = null; // {lat, lon} of the phone, when the crew lets us know it
let signedIn = false;

// -- the sync bar -----------------------------------------------------------------------------

function lastSync() {
  try {
    return status.lastSyncedAt || localStorage.getItem(LAST_SYNC_KEY);
  } catch {
    return status.lastSyncedAt;
  }
}

function renderStatus() {
  const unsynced = $("unsynced");
  unsynced.textContent = t("sync.unsynced", { count: status.unsynced });
  unsynced.dataset.count = String(status.unsynced);
  const last = lastSync();
  $("last-sync").textContent = status.syncing ? t("sync.syncing")
    : last ? t("sync.last", { time: time(last), when: relative(last) }) : t("sync.never");
  document.body.dataset.syncing = String(status.syncing);
  $("sync-now").disabled = !signedIn;
  const attention = status.attention;
  $("attention-count").textContent = String(attention);
  $("attention-count").dataset.count = String(attention);
  const offline = status.lastErrorKind === "offline";
  $("notice-sync-error").hidden = !status.lastError || status.lastErrorKind === "auth";
  $("notice-sync-error").textContent = offline ? t("sync.offline") : t("sync.error", { error: status.lastError || "" });
  $("storage-state").textContent = status.persisted === true ? t("storage.persisted")
    : status.persisted === false ? t("storage.not_persisted") : "";
}

async function renderSession() {
  const { auth, user, expired } = await store.session();
  signedIn = Boolean(auth);
  const stale = signedIn && (expired || status.needsSignIn);
  $("notice-signin").hidden = !stale;
  if (stale) $("notice-signin-text").textContent = t("signin.expired", { count: status.unsynced });
  $("signed-in-as").textContent = user ? t("signin.as", { name: user.display_name || user.username }) : "";
  $("sign-out").hidden = !signedIn;
  $("notify-me").hidden = !signedIn || !("PushManager" in window);
  $("tabs").hidden = !signedIn;
  renderStatus();
}

// -- views ------------------------------------------------------------------------------------

function parseRoute() {
  const [, view = "jobs", id] = location.hash.split("/");
  return { view: VIEWS.includes(view) ? view : "jobs", id };
}

function show(view) {
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  for (const name of ["jobs", "map", "attention"]) {
    if (view === name) $(`tab-${name}`).setAttribute("aria-current", "page");
    else $(`tab-${name}`).removeAttribute("aria-current");
  }
}

let drawing = Promise.resolve();
let again = false;
let drawQueued = false;
let soon = null;

/** Redraw what is on screen from IndexedDB: at once when the crew moved to another view,
 * else a moment after the last of a burst of changes (a sync applying hundreds of edits
 * redraws once, not hundreds of times). One redraw at a time. */
function draw({ moved = false } = {}) {
  if (!moved) {
    clearTimeout(soon);
    soon = setTimeout(() => queueDraw({ moved: false }), 60);
    return drawing;
  }
  return queueDraw({ moved });
}

function queueDraw({ moved }) {
  if (drawQueued && !moved) {
    again = true;
    return drawing;
  }
  drawQueued = true;
  drawing = drawing.then(async () => {
    drawQueued = false;
    again = false;
    try {
      await drawNow(moved);
    } catch (error) {
      console.error(error);
    }
    if (again) draw();
  });
  return drawing;
}

async function drawNow(moved) {
  await renderSession();
  let { view, id } = parseRoute();
  if (!signedIn) view = "signin";
  if (view === "signin") {
    show(view);
    $("signin-kept").hidden = status.unsynced === 0;
    $("signin-kept").textContent = t("signin.kept", { count: status.unsynced });
    if (moved) $("signin-title").focus();
    return;
  }
  if (view === "job") {
    await renderJob(id, { refresh: !moved && shownJob() === id });
  } else {
    const jobs = await store.jobs(); // every job on the phone: only the views that list them
    if (view === "jobs") renderList(jobs, position);
    else if (view === "map") {
      show(view); // Leaflet measures its container: shown first
      renderMap(jobs, () => { location.hash = "#/jobs"; });
    } else if (view === "attention") await renderAttention(jobs);
  }
  show(view); // once drawn: never a moment of the previous job under the crew's finger
  if (moved) ($(`${view}-title`) || $("job-title") || $("main"))?.focus();
}

// -- sign in ----------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  const username = $("username").value.trim();
  const password = $("password").value;
  if (!username || !password) {
    $("signin-error").textContent = t("signin.missing");
    return;
  }
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    await client.signIn(username, password);
    $("password").value = "";
    location.hash = "#/jobs";
    await draw({ moved: true });
  } catch (error) {
    const kind = error.kind === "offline" ? "signin.offline" : error.kind === "other_user" ? "signin.other_user"
      : error.status === 401 ? "signin.wrong" : error.status === 429 ? "signin.rate" : "signin.failed";
    $("signin-error").textContent = t(kind, { detail: error.message });
  } finally {
    if (button) button.disabled = false;
  }
});

$("sign-out").addEventListener("click", async () => {
  if (status.unsynced > 0 && !window.confirm(t("signout.confirm", { count: status.unsynced }))) return;
  await client.signOut();
  draw({ moved: true });
});

$("sync-now").addEventListener("click", () => client.syncNow({ reason: "button" }));

// -- distances --------------------------------------------------------------------------------

function watchPosition() {
  if (!navigator.geolocation) return;
  $("locate-row").hidden = true;
  navigator.geolocation.watchPosition((p) => {
    const first = !position;
    position = { lat: p.coords.latitude, lon: p.coords.longitude };
    if (first) draw();
  }, () => { $("locate-row").hidden = false; }, { maximumAge: 60_000, timeout: 20_000 });
}

async function startPosition() {
  if (!navigator.geolocation) return;
  try {
    const permission = await navigator.permissions?.query({ name: "geolocation" });
    if (permission?.state === "granted") {
      watchPosition();
      return;
    }
  } catch {
    // no Permissions API: ask when the crew taps the button
  }
  $("locate-row").hidden = false;
}

$("locate").addEventListener("click", watchPosition);

// -- service worker: ready offline, update available (never in the middle of a form) ----------

let waiting = null;
let updating = false;

/** Is the crew half-way through a form? (Anything typed or chosen that is not sent yet.) */
export function formBusy() {
  if ($("move-slot")?.childElementCount) return true;
  const forms = $("view-signin").hidden ? "#view-job" : "#view-job, #view-signin";
  const fields = document.querySelectorAll(forms.split(", ").map((v) => `${v} input, ${v} textarea, ${v} select`).join(", "));
  return [...fields].some((field) => (field.type === "file" ? field.files?.length : field.value.trim() !== ""));
}

function offerUpdate(worker) {
  waiting = worker;
  $("notice-update").hidden = false;
}

$("update-now").addEventListener("click", () => {
  if (!waiting) return;
  if (formBusy()) {
    $("update-wait").textContent = t("update.finish_form");
    return;
  }
  updating = true;
  waiting.postMessage({ type: "skip-waiting" });
});

async function registerWorker() {
  if (!("serviceWorker" in navigator)) return;
  let registration;
  try {
    registration = await navigator.serviceWorker.register("/crew/sw.js", { scope: "/crew/" });
  } catch (error) {
    console.warn("no service worker", error);
    return;
  }
  navigator.serviceWorker.addEventListener("controllerchange", () => {
    if (updating) location.reload(); // only when the crew asked for it
  });
  if (registration.waiting && navigator.serviceWorker.controller) offerUpdate(registration.waiting);
  registration.addEventListener("updatefound", () => {
    const worker = registration.installing;
    worker?.addEventListener("statechange", () => {
      if (worker.state !== "installed") return;
      if (navigator.serviceWorker.controller) offerUpdate(worker);
      else $("notice-offline-ready").hidden = false; // the first install: the shell is cached
    });
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") registration.update().catch(() => {});
  });
  const active = await navigator.serviceWorker.ready;
  if (navigator.serviceWorker.controller) $("notice-offline-ready").hidden = false;
  setTimeout(() => { $("notice-offline-ready").hidden = true; }, 8000); // said once, then out of the way
  const channel = new MessageChannel();
  channel.port1.onmessage = (event) => { $("app-version").textContent = t("app.version", { version: event.data.version }); };
  active.active?.postMessage({ type: "version" }, [channel.port2]);
}

// -- notify me (Web Push: new jobs for this crew) ---------------------------------------------

function keyBytes(base64url) {
  const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (base64url.length % 4)) % 4));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

$("notify-me").addEventListener("click", async () => {
  const state = $("notify-state");
  try {
    if ((await Notification.requestPermission()) !== "granted") {
      state.textContent = t("push.denied");
      return;
    }
    const { auth } = await store.db.readMeta(["auth"]);
    const headers = { Authorization: `Bearer ${auth.token}`, "Content-Type": "application/json" };
    const key = await fetch("/api/push/vapid-public-key", { headers, signal: timeoutSignal(REQUEST_MS) });
    if (!key.ok) throw new Error(`HTTP ${key.status}`);
    const registration = await navigator.serviceWorker.ready;
    const subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true, applicationServerKey: keyBytes((await key.json()).public_key),
    });
    const saved = await fetch("/api/me/push-subscriptions", {
      method: "POST", headers, body: JSON.stringify({ ...subscription.toJSON(), language: i18n.language }),
      signal: timeoutSignal(REQUEST_MS),
    });
    if (!saved.ok) throw new Error(`HTTP ${saved.status}`);
    state.textContent = t("push.on");
  } catch (error) {
    console.warn(error);
    state.textContent = t("push.failed");
  }
});

// -- start ------------------------------------------------------------------------------------

function languageSwitch() {
  const select = $("language");
  select.replaceChildren(...LANGUAGES.map(({ code, name }) => h("option", { value: code, lang: code }, name)));
  select.value = i18n.language;
  select.addEventListener("change", () => i18n.setLanguage(select.value));
  i18n.onChange(() => {
    select.value = i18n.language;
    document.title = t("app.name");
    draw({ moved: false });
  });
  document.title = t("app.name");
}

async function start() {
  await i18n.init("crew", { supported: LANGUAGES.map((l) => l.code) });
  languageSwitch();
  registerWorker();
  // Nothing on the way to the first drawing waits on the network: the day is drawn from
  // IndexedDB (the workflow too), and the server's answers redraw it when they come.
  await store.loadKeptWorkflow();
  const refreshWorkflow = () => store.refreshWorkflow().then((changed) => { if (changed) draw(); });
  refreshWorkflow();
  let wasSyncing = false;
  client.addEventListener("status", (event) => {
    status = event.detail;
    if (status.lastSyncedAt) {
      try { localStorage.setItem(LAST_SYNC_KEY, status.lastSyncedAt); } catch { /* shown from memory */ }
    }
    renderStatus();
    if (wasSyncing && !status.syncing) {
      draw(); // a sync ended: new jobs, acknowledged edits
      if (!status.lastError && !store.getWorkflow()) refreshWorkflow(); // the server answers again
    }
    wasSyncing = status.syncing;
  });
  client.addEventListener("signin-required", () => draw());
  outboxEvents.addEventListener("change", () => draw());
  window.addEventListener("hashchange", () => draw({ moved: true }));
  setInterval(() => renderStatus(), 30_000); // "3 min ago" moves on
  await client.start();
  status = client.status;
  await queueDraw({ moved: false });
  document.body.dataset.ready = "true";
  startPosition();
}

start();
