// The dispatcher console: filters, the list and the map kept in step, selection and bulk
// assign (with the overload warning), live updates and emergency alerts.

import { i18n } from "/lib/i18n.js";
import { api, ApiError } from "/dispatch/api.js";
import { WorkMap } from "/dispatch/map.js";

const $ = (id) => document.getElementById(id);
const state = {
  filters: { open_only: "true" },
  items: [],
  cursor: null,
  selected: new Set(),
  current: null,
  crews: [],
  etag: null,
  lookups: { districts: [], services: [] },
};
let map;
let panels;
let panelsLoaded;
const panelsReady = new Promise((resolve) => { panelsLoaded = resolve; });

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

// -- filters -------------------------------------------------------------------------------

function readFilters() {
  const f = { open_only: $("f-status").value ? undefined : "true" };
  f.status = $("f-status").value || undefined;
  f.q = $("f-q").value.trim() || undefined;
  f.district_id = $("f-district").value || undefined;
  f.service_code = $("f-service").value || undefined;
  f.priority = $("f-priority").value || undefined;
  f.crew_id = $("f-crew").value || undefined;
  f.emergency = $("f-emergency").checked ? "true" : undefined;
  f.overdue = $("f-overdue").checked ? "true" : undefined;
  // datetime-local is the dispatcher's local time: sent as an instant.
  f.since = $("f-since").value ? new Date($("f-since").value).toISOString() : undefined;
  f.until = $("f-until").value ? new Date($("f-until").value).toISOString() : undefined;
  return f;
}

async function refresh({ keepList = false } = {}) {
  state.filters = readFilters();
  // Both answers, then both drawn in one go: the list and the map share one layout and paint.
  const [data, page] = await Promise.all([fetchMap(), keepList ? null : fetchList(true)]);
  if (page) showList(page, true);
  if (data) showMap(data);
}

// The first screen's two reads start before anything else (see main), then wait here.
let early = null;
function mapRequest(filters, etag) {
  const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v !== undefined));
  return fetch(`/api/dispatch/map?${params}`, { headers: api.headers(etag ? { "If-None-Match": etag } : {}) });
}

/** The map's arrays, or null when unchanged (304) or refused (the error is shown). */
async function readMap(response) {
  if (response.status === 304) return null;
  if (!response.ok) {
    showError(new ApiError(response.status, await response.json().catch(() => null)));
    return null;
  }
  state.etag = response.headers.get("ETag");
  return response.json();
}

function fetchMap() {
  const first = early?.map;
  if (early) early.map = null;
  return first || mapRequest(state.filters, state.etag).then(readMap);
}

function showMap(data) {
  performance.mark("map-data");
  map.show(data);
  performance.mark("map-shown");
  $("list-count").textContent = i18n.t("list.count", { count: data.count });
}

function fetchList(reset) {
  const first = early?.board;
  if (early) early.board = null;
  return first || api.get("/api/dispatch/board", { ...state.filters, limit: 100, cursor: reset ? undefined : state.cursor });
}

function showList(page, reset, { first = false } = {}) {
  state.items = reset ? page.items : state.items.concat(page.items);
  state.cursor = page.next_cursor;
  renderList({ first });
  performance.mark("list-shown");
}

async function loadMore() {
  showList(await fetchList(false), false);
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
const pad = (n) => String(n).padStart(2, "0");
// By hand, in the browser's time zone: the first Intl.DateTimeFormat of a page loads the
// calendar data, which cost the first screen 20-90 ms.
function dueText(iso) {
  const date = new Date(iso);
  const month = i18n.t("date.months").split(" ")[date.getMonth()];
  return i18n.t("list.due.format", { month, day: date.getDate(), hour: pad(date.getHours()), minute: pad(date.getMinutes()) });
}

// The rows as one piece of HTML (clicks and ticks are handled on the table: see main); a
// hundred rows built node by node cost the first screen tens of milliseconds.
function rowHtml(item) {
  const classes = [state.selected.has(item.id) ? "selected" : "", state.current === item.id ? "current" : "",
    item.emergency ? "emergency" : "", item.overdue ? "overdue" : ""].join(" ").trim();
  const due = item.sla_due_at ? dueText(item.sla_due_at) : "—";
  return `<tr data-id="${item.id}" class="${classes}" draggable="true">`
    + `<td><input type="checkbox" aria-label="${esc(i18n.t("list.select.one", { number: item.number }))}"${state.selected.has(item.id) ? " checked" : ""}></td>`
    + `<td><a href="#wo-${item.id}">${esc(item.number)}</a></td><td>${esc(item.service_name)}</td>`
    + `<td>${esc(item.status_label)}</td><td class="num">${esc(item.priority)}</td>`
    + `<td>${esc(due)}</td><td>${esc(item.crew_name || "—")}</td></tr>`;
}

// No row is shorter (13 px text at 1.4 lines, its padding and border: ~25.7 px), so this many
// rows fill more than the window's height.
const ROW_MIN_PX = 25;
let rendering = 0; // which render the rows still to come belong to

/** Show state.items. With `first`, only the rows a window's height can show are laid out
 * before the first frame (each row costs the first layout ~0.2 ms); the rest follow, in
 * order, right after that frame is painted. */
function renderList({ first = false } = {}) {
  const body = $("board").tBodies[0];
  const render = ++rendering;
  const now = first ? Math.min(state.items.length, Math.ceil(window.innerHeight / ROW_MIN_PX)) : state.items.length;
  body.innerHTML = state.items.slice(0, now).map(rowHtml).join("");
  const rest = () => {
    if (render !== rendering) return; // a newer render has replaced these rows
    if (now < state.items.length) body.insertAdjacentHTML("beforeend", state.items.slice(now).map(rowHtml).join(""));
    $("more").hidden = !state.cursor;
  };
  if (now < state.items.length) afterPaint().then(rest);
  else rest();
}

/** Resolves once the next frame has been painted (a task queued from that frame's
 * requestAnimationFrame runs after its paint). */
function afterPaint() {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
}

const DRAGGED = "application/x-fieldwork-work-orders";

function listEvents() {
  const body = $("board").tBodies[0];
  // Drag a row (or the ticked rows, when it is one of them) onto a crew in the Crews tab.
  body.addEventListener("dragstart", (event) => {
    const row = event.target.closest?.("tr[data-id]");
    if (!row) return;
    const id = Number(row.dataset.id);
    const ids = state.selected.has(id) ? [...state.selected] : [id];
    event.dataTransfer.setData(DRAGGED, JSON.stringify(ids));
    event.dataTransfer.setData("text/plain", ids.join(" "));
    event.dataTransfer.effectAllowed = "move";
  });
  body.addEventListener("change", (event) => {
    const row = event.target.closest("tr[data-id]");
    if (row && event.target.matches("input[type=checkbox]")) toggle([Number(row.dataset.id)], event.target.checked);
  });
  body.addEventListener("click", (event) => {
    const link = event.target.closest("a[href^='#wo-']");
    if (!link) return;
    event.preventDefault();
    openOrder(Number(link.closest("tr").dataset.id));
  });
}

// -- selection and bulk assign ---------------------------------------------------------------

function toggle(ids, on) {
  for (const id of ids) on ? state.selected.add(id) : state.selected.delete(id);
  selectionChanged();
}

function selectionChanged() {
  map.select(state.selected);
  $("selected-count").textContent = i18n.t("select.count", { count: state.selected.size });
  for (const row of $("board").tBodies[0].rows) {
    const on = state.selected.has(Number(row.dataset.id));
    row.classList.toggle("selected", on);
    row.querySelector("input").checked = on;
  }
}

function confirmDialog(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

/** Whether an assignment to this crew may go ahead: the server's load check first, and when
 * the jobs would take the crew past its capacity the dialog says so ("Assign anyway"). Every
 * way of assigning asks: bulk, the detail panel and a drop on a crew. */
async function loadAllows(crewId, ids) {
  if (!crewId) return true;
  const check = await api.post(`/api/dispatch/crews/${crewId}/check`, { work_order_ids: ids });
  return !check.overloaded || confirmDialog(i18n.t("select.overload", { warning: check.warning }));
}

/** Assign (or with no crew unassign) these jobs, after the load check. */
async function assignMany(ids, crewId) {
  if (!ids.length) return;
  try {
    if (!(await loadAllows(crewId, ids))) return;
    await api.post("/api/dispatch/assign", { work_order_ids: ids, crew_id: crewId ? Number(crewId) : null, force: true });
    flash(i18n.t(crewId ? "select.assigned" : "select.unassigned", { count: ids.length }));
    for (const id of ids) state.selected.delete(id);
    selectionChanged();
    await Promise.all([refresh(), panels?.refreshCrews()]);
  } catch (error) {
    showError(error);
  }
}

function bulkAssign(crewId) {
  return assignMany([...state.selected], crewId);
}

// -- detail, alerts, messages ----------------------------------------------------------------

async function openOrder(id) {
  state.current = id;
  for (const row of $("board").tBodies[0].rows) {
    const current = Number(row.dataset.id) === id;
    row.classList.toggle("current", current);
    if (current) row.scrollIntoView({ block: "nearest" }); // a marker's job shown in the list too
  }
  await panelsReady; // its code loads after the first screen
  await panels.showDetail(id);
}

function flash(text) {
  $("map-hint").textContent = text;
}

function showError(error) {
  const body = error instanceof ApiError ? error.body : {};
  flash(i18n.t("error", { detail: body.detail || error.message }));
}

function beep() {
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    tone.frequency.value = 880;
    tone.connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.4);
  } catch {
    // no sound available: the banner still shows
  }
}

function alertBanner(alert) {
  const node = el("div", { class: "alert" },
    i18n.t("alert.text", { number: alert.number, words: alert.words || alert.reason || "", address: alert.address || "" }), " ",
    el("button", { type: "button", onclick: () => { openOrder(alert.work_order_id); node.remove(); } }, i18n.t("alert.open")));
  $("alerts").append(node);
  beep();
}

// -- start -----------------------------------------------------------------------------------

async function fillLookups() {
  const [types, districts, crews, config] = await Promise.all([
    api.get("/api/service-types"), api.get("/api/districts"), api.get("/api/dispatch/crews"),
    api.get("/api/resident/config").catch(() => null),
  ]);
  const statusSelect = $("f-status");
  for (const code of ["new", "assigned", "en_route", "on_site", "on_hold", "completed", "cannot_complete", "cancelled"]) {
    statusSelect.append(el("option", { value: code }, i18n.t(`status.${code}`)));
  }
  for (const t of types) $("f-service").append(el("option", { value: t.code }, t.name));
  for (const d of districts.filter((d) => d.primary)) $("f-district").append(el("option", { value: d.id }, d.name));
  state.crews = crews;
  for (const c of crews) {
    $("f-crew").append(el("option", { value: c.id }, c.name));
    $("bulk-crew").append(el("option", { value: c.id }, c.name));
  }
  state.lookups = { districts, services: types };
  if (config?.map?.tiles_url) map.tiles(config.map.tiles_url, config.map.tiles_attribution);
}

/** The districts drawn under the jobs: with no map tiles (no network) the map still reads. */
async function outlines() {
  const shapes = await api.get("/api/districts", { geometry: "true" });
  shapes.features = shapes.features.filter((f) => f.properties.primary);
  map.showOutlines(shapes);
}

async function start() {
  $("signin").hidden = true;
  $("console").hidden = false;
  // The first screen in one go: the answers (already asked for, see main), the list, then the
  // map (its size read once the list is in) with its jobs; one layout, one paint.
  state.filters = readFilters();
  const [data, page] = await Promise.all([fetchMap(), fetchList(true)]);
  showList(page, true, { first: true });
  map = new WorkMap($("map"), {
    onOpen: openOrder,
    onBox: (ids) => {
      toggle(ids, true);
      setBox(false);
    },
    onPlace: (latlng) => panels.place(latlng),
    label: (data, i) => {
      const code = data.services[data.service[i]];
      const type = state.lookups.services.find((t) => t.code === code)?.name || code;
      return `#${data.id[i]} ${type} · ${i18n.t(`status.${data.statuses[data.status[i]]}`)}`;
    },
    clusterLabel: (count) => i18n.t("map.cluster", { count }),
  });
  if (data) showMap(data);
  window.fieldworkDispatch = { map: map.map, mapView: map, state }; // for the browser tests and the curious
  performance.mark("first-screen");
  // Then, once that frame is painted, the filters' choices, the panel and the district
  // outlines. The side panel and the live stream are not on the first screen: their code
  // loads after it.
  await afterPaint();
  // The date filters' date-and-time widgets too: built while the page's HTML is parsed, they
  // took more than half of that parse (and their own layout) on the first screen.
  for (const input of document.querySelectorAll("#filters input[data-type]")) input.type = input.dataset.type;
  const [{ Panels }, { connectLive }] = await Promise.all([import("/dispatch/panels.js"), import("/dispatch/live.js"), fillLookups()]);
  panels = new Panels({ api, i18n, el, map, state, openOrder, refresh, flash, showError, loadAllows, assignMany, dragged: DRAGGED });
  panelsLoaded();
  selectionChanged();
  panels.refreshCrews();
  outlines().catch(showError);
  connectLive(() => api.headers(), onLive, (on) => {
    $("live").classList.toggle("on", on);
    $("live").textContent = i18n.t(on ? "live.on" : "live.off");
  });
}

let pending = null;
function onLive(name, data) {
  if (name === "alert") return alertBanner(JSON.parse(data));
  if (name !== "changed") return;
  const ids = JSON.parse(data).ids;
  clearTimeout(pending);
  // A burst of changes (an import, a bulk assign) is one refresh.
  pending = setTimeout(async () => {
    await refresh();
    panels.refreshCrews();
    if (state.current && ids.includes(state.current)) panels.showDetail(state.current);
    document.body.dataset.lastChange = ids.join(",");
  }, 300);
}

function setBox(on) {
  map.setMode(on ? "box" : null);
  $("box-select").setAttribute("aria-pressed", String(on));
  flash(on ? i18n.t("select.box.hint") : "");
}

function exportParams() {
  const { open_only, ...rest } = state.filters;
  return { ...rest, open_only };
}

async function main() {
  performance.mark("main");
  if (api.token) {
    // Signed in already: the page's head asked for the map and the list (else ask now).
    const head = window.fieldworkEarly;
    // Their bodies are read and parsed while the text loads (not after, on the first screen).
    early = {
      map: (head?.map || mapRequest(state.filters, null)).then(readMap),
      board: head ? head.board.then(async (r) => {
        if (r.status === 401) {
          api.token = null;
          window.dispatchEvent(new Event("fieldwork:signed-out"));
        }
        return r.ok ? r.json() : Promise.reject(new ApiError(r.status, await r.json().catch(() => null)));
      }) : api.get("/api/dispatch/board", { ...state.filters, limit: 100 }),
    };
    early.board.catch(() => {});
  }
  await i18n.init("dispatch", { supported: ["en"] });
  performance.mark("text-ready");
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh().catch(showError);
  });
  listEvents();
  $("more").addEventListener("click", () => loadMore().catch(showError));
  $("box-select").addEventListener("click", () => setBox(map.mode !== "box"));
  $("select-clear").addEventListener("click", () => { state.selected.clear(); selectionChanged(); });
  $("bulk-assign").addEventListener("click", () => bulkAssign($("bulk-crew").value));
  $("bulk-unassign").addEventListener("click", () => bulkAssign(null));
  $("export-csv").addEventListener("click", () => api.download("/api/dispatch/export.csv", exportParams(), "workorders.csv").catch(showError));
  $("export-geojson").addEventListener("click", () => api.download("/api/dispatch/export.geojson", exportParams(), "workorders.geojson").catch(showError));
  $("choropleth").addEventListener("change", (event) => panels.choropleth(event.target.checked).catch(showError));
  window.addEventListener("fieldwork:signed-out", () => location.reload());
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.signIn($("username").value, $("password").value);
    } catch (error) {
      $("signin-error").textContent = i18n.t(error.status === 403 ? "signin.forbidden" : "signin.failed");
      return;
    }
    await start();
  });
  // A token from this tab's sign-in: straight to work (a 401 on any call signs out).
  if (api.token) return start();
  $("signin").hidden = false;
  $("username").focus();
}

main();
