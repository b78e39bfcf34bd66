// One job: what to do and where, the moves the workflow allows from its status, and
// notes, photos, materials and time. The forms are built once per job and never redrawn
// under the crew's fingers: a sync only redraws the parts above and below them.

import { resizePhoto } from "../photo.js";
import * as store from "../store.js";
import {
  $, choiceLabel, dateTime, h, isolate, redraw, statusLabel, t,
} from "../ui.js";
import { dueText, jobBadges } from "./list.js";

const FORM_MOVES = {
  completed: { list: "resolution_codes", group: "resolution", label: "move.completed.code" },
  cannot_complete: { list: "cannot_complete_reasons", group: "reason", label: "move.cannot_complete.reason" },
  on_hold: { list: "hold_reasons", group: "hold", label: "move.on_hold.reason" },
};

let current = null; // the job id on screen
let objectUrls = [];

/** Say something to the crew (and to screen readers). */
function say(text, kind = "ok") {
  const note = $("job-said");
  note.textContent = text;
  note.className = `said ${kind}`;
}

function navigationUrl(job) {
  const where = `${job.lat},${job.lon}`;
  if (/iPhone|iPad|iPod/.test(navigator.userAgent)) return `maps://?daddr=${where}`;
  return `geo:${where}?q=${where}(${encodeURIComponent(job.number)})`;
}

// -- the parts a sync redraws -----------------------------------------------------------------

function header(job) {
  return [
    h("h1", { id: "job-title", tabindex: "-1" }, h("span", { class: "number" }, isolate(job.number)), " ",
      h("span", { class: "type" }, job.type_name)),
    h("p", { class: "badges" }, jobBadges(job)),
    h("p", { class: store.isOverdue(job) ? "due overdue" : "due" }, dueText(job)),
    h("p", { class: "address" }, job.address || t("job.no_address")),
    h("p", {}, h("a", { class: "button secondary", href: navigationUrl(job), id: "navigate" }, t("job.navigate"))),
    job.description ? h("p", { class: "description" }, job.description) : null,
    job.notes ? h("div", { class: "shared-notes" }, h("h2", {}, t("job.shared_notes")), h("p", {}, job.notes)) : null,
  ].filter(Boolean);
}

function actions(job) {
  if (job.leaving) return [h("p", { class: "handed", role: "note" }, t("job.handed_over.long"))];
  const moves = store.movesFrom(job.status);
  if (store.statusKind(job.status) !== "open") {
    return [h("p", { class: "finished", role: "note" }, t("job.finished", { status: statusLabel(job.status, job.status_label) }))];
  }
  if (!store.getWorkflow()) return [h("p", {}, t("job.no_workflow"))];
  return [h("div", { class: "moves" }, moves.map((to) => h("button", {
    type: "button", class: to === "completed" ? "primary" : "secondary", dataset: { move: to },
    onclick: () => (FORM_MOVES[to] ? openMoveForm(job, to) : quickMove(job, to)),
  }, t(`move.${to}`))))];
}

function photoFigure(sha256, caption, pending) {
  const img = h("img", { alt: caption || t("job.photo"), loading: "lazy" });
  (async () => {
    const url = (await store.localPhotoUrl(sha256)) || (pending ? null : await store.serverPhotoUrl(sha256));
    if (url) {
      objectUrls.push(url);
      img.src = url;
    }
  })();
  return h("figure", { class: "photo", dataset: { sha256 } }, img, caption ? h("figcaption", {}, caption) : null);
}

function cases(job) {
  const list = job.cases || [];
  if (!list.length) return [];
  return [h("h2", {}, t("job.cases", { count: list.length })), h("ul", { class: "cases" }, list.map((c) =>
    h("li", {},
      h("p", { class: "meta" }, [c.service_name, c.requested_at ? dateTime(c.requested_at) : null].filter(Boolean).join(" · ")),
      c.description ? h("p", {}, c.description) : h("p", { class: "help" }, t("job.no_description")),
      c.address && c.address !== job.address ? h("p", { class: "help" }, c.address) : null,
      /^https?:\/\//.test(c.media_url || "") ? h("img", { src: c.media_url, alt: t("job.case_photo"), loading: "lazy", class: "case-photo" }) : null)))];
}

function factText(kind, data) {
  if (kind === "note") return data.text;
  if (kind === "material") return t("fact.material", { item: data.item, quantity: data.quantity, unit: data.unit || "" });
  if (kind === "time") return t("fact.time", { minutes: data.minutes }) + (data.note ? ` — ${data.note}` : "");
  if (kind === "photo") return data.caption || t("job.photo");
  return "";
}

function history(job) {
  const items = [];
  for (const fact of job.pending_facts || []) {
    if (!fact.pending) continue;
    items.push({ kind: fact.kind, data: fact.data, at: fact.occurred_at, pending: true, uid: fact.uid });
  }
  const seen = new Set(items.map((i) => i.uid));
  for (const event of job.events || []) {
    if (seen.has(event.uid)) continue;
    const kind = event.kind === "status" ? "status" : event.kind;
    items.push({ kind, data: event.data || {}, at: event.occurred_at, to: event.to_status, uid: event.uid });
  }
  items.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
  if (!items.length) return [];
  return [h("h2", {}, t("job.history")), h("ul", { class: "history" }, items.map((item) => h("li", {
    class: item.pending ? "pending" : "", dataset: { kind: item.kind },
  },
  h("p", { class: "meta" }, item.at ? dateTime(item.at) : "", item.pending ? ` · ${t("job.not_synced")}` : ""),
  item.kind === "status"
    ? h("p", {}, statusLabel(item.to, item.to) + (item.data.reason ? ` — ${item.data.reason}` : ""))
    : h("p", {}, factText(item.kind, item.data)),
  item.kind === "photo" ? photoFigure(item.data.sha256, null, item.pending) : null)))];
}

// -- actions ----------------------------------------------------------------------------------

async function quickMove(job, to) {
  await store.move(job.id, to);
  say(t("said.moved", { status: statusLabel(to) }));
}

function position() {
  return new Promise((resolve) => {
    if (!navigator.geolocation) { resolve(null); return; }
    navigator.geolocation.getCurrentPosition(
      (p) => resolve({ lat: p.coords.latitude, lon: p.coords.longitude, accuracy_m: Math.round(p.coords.accuracy) }),
      () => resolve(null), { enableHighAccuracy: true, timeout: 8000, maximumAge: 60_000 });
  });
}

function openMoveForm(job, to) {
  const spec = FORM_MOVES[to];
  const choices = store.getWorkflow()[spec.list] || [];
  const form = h("form", { id: "move-form", class: "card", dataset: { move: to }, novalidate: true },
    h("h2", {}, t(`move.${to}.title`)),
    h("label", { for: "move-code" }, t(spec.label)),
    h("select", { id: "move-code", required: true },
      h("option", { value: "" }, t("form.choose")),
      choices.map((c) => h("option", { value: c.code }, choiceLabel(spec.group, c)))),
    h("label", { for: "move-note" }, t("move.note")),
    h("textarea", { id: "move-note", rows: "3", maxlength: "3000" }),
    to === "completed" && navigator.geolocation ? h("label", { class: "check" },
      h("input", { type: "checkbox", id: "move-position" }), t("move.position")) : null,
    h("p", { id: "move-error", class: "error", role: "alert" }),
    h("div", { class: "row" },
      h("button", { type: "submit", class: "primary" }, t(`move.${to}.submit`)),
      h("button", { type: "button", class: "secondary", onclick: () => closeMoveForm() }, t("form.cancel"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const code = $("move-code").value;
    if (!code) {
      $("move-error").textContent = t("move.choose_first");
      $("move-code").focus();
      return;
    }
    const choice = choices.find((c) => c.code === code);
    const note = $("move-note").value.trim();
    const where = $("move-position")?.checked ? await position() : null;
    // What residents read: the code's label (the server's words) and the crew's note.
    const reason = note ? `${choice.label}. ${note}` : choice.label;
    const args = {};
    if (where) args.position = where;
    await store.outbox.queueEdit("status", { work_order_id: job.id, to, reason, ...args });
    closeMoveForm();
    say(t("said.moved", { status: statusLabel(to) }));
  });
  $("move-slot").replaceChildren(form);
  $("move-code").focus();
}

function closeMoveForm() {
  $("move-slot").replaceChildren();
}

function factForms(job) {
  const id = job.id;
  const note = h("form", { id: "note-form", class: "card" },
    h("label", { for: "note-text" }, t("fact.note.label")),
    h("textarea", { id: "note-text", rows: "3", maxlength: "4000", required: true }),
    h("button", { type: "submit", class: "primary" }, t("fact.note.add")));
  note.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("note-text").value.trim();
    if (!text) return;
    await store.addNote(id, text);
    note.reset();
    say(t("said.note"));
  });

  const photo = h("div", { class: "card" },
    h("label", { for: "photo-input" }, t("fact.photo.label")),
    h("input", { type: "file", id: "photo-input", accept: "image/*", capture: "environment" }),
    h("p", { class: "help", id: "photo-status", role: "status" }));
  photo.querySelector("input").addEventListener("change", async (event) => {
    const [file] = event.target.files;
    if (!file) return;
    $("photo-status").textContent = t("fact.photo.saving");
    try {
      const blob = await resizePhoto(file);
      await store.addPhoto(id, blob);
      $("photo-status").textContent = t("fact.photo.kept", { kb: Math.round(blob.size / 1024) });
      say(t("said.photo"));
    } catch (error) {
      $("photo-status").textContent = t("fact.photo.failed");
      console.warn(error);
    }
    event.target.value = "";
  });

  const material = h("form", { id: "material-form", class: "card" },
    h("fieldset", {}, h("legend", {}, t("fact.material.label")),
      h("label", { for: "material-item" }, t("fact.material.item")),
      h("input", { id: "material-item", required: true, maxlength: "200", autocomplete: "off" }),
      h("div", { class: "row" },
        h("span", {}, h("label", { for: "material-quantity" }, t("fact.material.quantity")),
          h("input", { id: "material-quantity", type: "number", inputmode: "decimal", min: "0.01", max: "1000", step: "any", required: true })),
        h("span", {}, h("label", { for: "material-unit" }, t("fact.material.unit")),
          h("input", { id: "material-unit", maxlength: "20", placeholder: t("fact.material.unit.hint") })))),
    h("button", { type: "submit", class: "primary" }, t("fact.material.add")));
  material.addEventListener("submit", async (event) => {
    event.preventDefault();
    const item = $("material-item").value.trim();
    const quantity = Number($("material-quantity").value);
    if (!item || !(quantity > 0 && quantity <= 1000)) {
      say(t("fact.material.invalid"), "error");
      return;
    }
    await store.addMaterial(id, item, quantity, $("material-unit").value.trim());
    material.reset();
    say(t("said.material"));
  });

  const time = h("form", { id: "time-form", class: "card" },
    h("label", { for: "time-minutes" }, t("fact.time.label")),
    h("input", { id: "time-minutes", type: "number", inputmode: "numeric", min: "1", max: "1440", step: "1", required: true }),
    h("button", { type: "submit", class: "primary" }, t("fact.time.add")));
  time.addEventListener("submit", async (event) => {
    event.preventDefault();
    const minutes = Number($("time-minutes").value);
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
      say(t("fact.time.invalid"), "error");
      return;
    }
    await store.addTime(id, minutes);
    time.reset();
    say(t("said.time"));
  });
  return [h("h2", {}, t("job.add")), note, photo, material, time];
}

// -- the view ---------------------------------------------------------------------------------

/** Draw job `id`; `refresh` (after a sync or an edit) keeps the forms as they are. */
export async function renderJob(id, { refresh = false } = {}) {
  const job = await store.job(id);
  const root = $("view-job");
  for (const url of objectUrls.splice(0)) URL.revokeObjectURL(url);
  if (!job) {
    current = null;
    root.replaceChildren(h("h1", { tabindex: "-1", id: "job-title" }, t("job.gone")),
      h("p", {}, h("a", { href: "#/jobs" }, t("nav.back"))));
    return;
  }
  if (!refresh || current !== String(id)) {
    current = String(id);
    root.replaceChildren(
      h("p", {}, h("a", { href: "#/jobs", class: "back" }, t("nav.back"))),
      h("div", { id: "job-top" }),
      h("div", { id: "job-actions" }),
      h("div", { id: "move-slot" }),
      h("p", { id: "job-said", role: "status", "aria-live": "polite" }),
      h("div", { id: "job-cases" }),
      h("div", { id: "job-forms" }, store.statusKind(job.status) === "open" && !job.leaving ? factForms(job) : []),
      h("div", { id: "job-history" }));
  }
  redraw($("job-top"), header(job));
  redraw($("job-actions"), actions(job));
  redraw($("job-cases"), cases(job));
  redraw($("job-history"), history(job));
  if (store.statusKind(job.status) !== "open" || job.leaving) {
    $("job-forms").replaceChildren();
    closeMoveForm();
  }
}

export const shownJob = () => current;
