// Needs attention: edits the server refused or kept as a conflict, saying what happened,
// and jobs handed over to someone else that wait for their edits to be acknowledged.

import * as store from "../store.js";
import { $, dateTime, h, isolate, statusLabel, t } from "../ui.js";

function what(item) {
  const { name, args = {} } = item;
  if (name === "status") return t("attention.edit.status", { status: statusLabel(args.to) });
  if (name === "note") return t("attention.edit.note", { text: args.text });
  return t(`attention.edit.${name}`, { ...args, unit: args.unit || "" });
}

export async function renderAttention(jobs) {
  const items = await store.outbox.needsAttention();
  const numbers = new Map(jobs.map((j) => [String(j.id), j.number]));
  const handed = jobs.filter((j) => j.leaving);
  $("attention-empty").hidden = items.length + handed.length > 0;
  $("attention").replaceChildren(...items.map((item) => {
    const number = numbers.get(String(item.work_order_id ?? item.args?.work_order_id));
    const outcome = item.status === "conflict" ? "attention.conflict" : item.status === "blocked" ? "attention.blocked" : "attention.rejected";
    return h("li", { dataset: { mid: item.mid, status: item.status } },
      h("p", { class: "meta" }, number ? isolate(number) : t("attention.job_id", { id: item.args?.work_order_id }),
        item.device_ts ? ` · ${dateTime(item.device_ts)}` : ""),
      h("p", { class: "what" }, what(item)),
      h("p", { class: "outcome" }, t(outcome)),
      h("p", { class: "reason" }, item.reason || ""));
  }));
  $("handed").replaceChildren(...handed.map((job) => h("li", { dataset: { id: job.id } },
    h("a", { href: `#/job/${job.id}` }, isolate(job.number)), " — ",
    t("job.handed_over.waiting", { count: job.pending_edits || 0 }))));
  $("handed-title").hidden = handed.length === 0;
  return items.length;
}
