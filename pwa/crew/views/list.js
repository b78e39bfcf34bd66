// Today's jobs in route order: number, type, priority, due time (overdue), address,
// distance, status and what is still unsynced. Each row opens the job.

import * as store from "../store.js";
import { $, h, isolate, metres, redraw, relative, statusLabel, t, time } from "../ui.js";

export function jobBadges(job) {
  const badges = [h("span", { class: `badge p${job.priority}` }, t("job.priority", { n: job.priority }))];
  if (job.emergency) badges.unshift(h("span", { class: "badge emergency" }, t("job.emergency")));
  if (job.leaving) badges.push(h("span", { class: "badge handed" }, t("job.handed_over")));
  else badges.push(h("span", { class: `badge status ${store.statusKind(job.status)}` }, statusLabel(job.status, job.status_label)));
  if (job.pending_edits) badges.push(h("span", { class: "badge pending" }, t("job.unsynced", { count: job.pending_edits })));
  return badges;
}

export function dueText(job) {
  if (!job.sla_due_at) return t("job.no_due");
  return store.isOverdue(job)
    ? t("job.overdue", { when: relative(job.sla_due_at) })
    : t("job.due", { time: time(job.sla_due_at), when: relative(job.sla_due_at) });
}

export function renderList(jobs, position) {
  const list = $("jobs");
  $("jobs-count").textContent = t("jobs.count", { count: jobs.filter((j) => store.statusKind(j.status) === "open" && !j.leaving).length });
  $("jobs-empty").hidden = jobs.length > 0;
  redraw(list, jobs.map((job, index) => jobRow(job, index, position)));
}

function jobRow(job, index, position) {
  const away = metres(store.distance(position, job.lat, job.lon));
  const overdue = store.isOverdue(job);
  return h("li", { dataset: { id: job.id, number: job.number }, class: store.statusKind(job.status) !== "open" ? "done" : "" },
    h("a", { href: `#/job/${job.id}`, class: "job" },
      h("span", { class: "order", "aria-hidden": "true" }, String(index + 1)),
      h("span", { class: "body" },
        h("span", { class: "number" }, isolate(job.number)),
        h("span", { class: "type" }, job.type_name),
        h("span", { class: "badges" }, jobBadges(job)),
        h("span", { class: overdue ? "due overdue" : "due" }, dueText(job)),
        h("span", { class: "address" }, job.address || t("job.no_address")),
        away ? h("span", { class: "distance" }, t("job.away", { distance: away })) : null)));
}
