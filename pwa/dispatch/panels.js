// The side panel's tabs: a work order's detail and actions, crews' load, a crew's route
// (drag to reorder, "optimise order"), the unlocated queue, conflicts, statistics.

export class Panels {
  constructor(ctx) {
    Object.assign(this, ctx);
    this.placing = null;
    this.routeCrew = null;
    for (const tab of document.querySelectorAll("[role=tab]")) {
      tab.addEventListener("click", () => this.tab(tab.dataset.tab));
    }
  }

  pane(name) {
    return document.getElementById(`tab-${name}`);
  }

  tab(name) {
    for (const tab of document.querySelectorAll("[role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
    for (const panel of document.querySelectorAll("[role=tabpanel]")) panel.hidden = panel.id !== `tab-${name}`;
    const loaders = { crews: () => this.refreshCrews(), unlocated: () => this.unlocated(), conflicts: () => this.conflicts(), stats: () => this.stats(), route: () => this.routeCrew && this.route(this.routeCrew) };
    loaders[name]?.()?.catch?.(this.showError);
  }

  // -- detail --------------------------------------------------------------------------------

  async showDetail(id) {
    const { el, i18n, api } = this;
    const wo = await api.get(`/api/dispatch/workorders/${id}`);
    this.tab("detail");
    this.map.focus(wo.lat, wo.lon);
    const pane = this.pane("detail");
    const change = async (body) => {
      try {
        await api.patch(`/api/dispatch/workorders/${id}`, { ...body, version: wo.version });
        await Promise.all([this.showDetail(id), this.refresh()]);
      } catch (error) {
        if (error.status === 409) this.flash(i18n.t("detail.stale", { version: error.body.current_version ?? "?" }));
        else this.showError(error);
        if (error.status === 409) this.showDetail(id);
      }
    };
    const crewSelect = el("select", { id: "d-crew", "aria-label": i18n.t("detail.crew") }, el("option", { value: "" }, "—"),
      this.state.crews.map((c) => el("option", { value: c.id, selected: c.id === wo.crew_id }, c.name)));
    const priority = el("select", { id: "d-priority", "aria-label": i18n.t("detail.priority") }, [1, 2, 3, 4].map((p) => el("option", { value: p, selected: p === wo.priority }, p)));
    const due = el("input", { type: "datetime-local", id: "d-due", "aria-label": i18n.t("detail.due") });
    if (wo.sla_due_at) due.value = toLocalInput(wo.sla_due_at);
    const reason = el("input", { id: "d-reason", "aria-label": i18n.t("detail.cancel.reason"), placeholder: i18n.t("detail.cancel.reason"), maxlength: 500 });
    const mergeInput = el("input", { id: "d-merge", "aria-label": i18n.t("detail.merge.label"), placeholder: i18n.t("detail.merge.label"), size: 14 });
    const suggestion = el("p", { class: "hint", id: "d-suggestion", role: "status" });
    pane.replaceChildren(
      el("h2", {}, `${wo.number} · ${wo.service_name}`),
      el("p", {}, `${wo.status_label}${wo.overdue ? " · " + i18n.t("detail.overdue") : ""}${wo.emergency ? " · ⚠ " + i18n.t("detail.emergency") : ""}`),
      el("p", {}, wo.address || "", el("br"), wo.district_name || "", " · ", i18n.t("detail.version", { version: wo.version })),
      el("p", {}, wo.description),
      el("div", { class: "actions" },
        el("form", { onsubmit: async (e) => {
          e.preventDefault();
          const crewId = crewSelect.value ? Number(crewSelect.value) : null;
          try {
            // The same warning as a bulk assign before a crew takes more than it can.
            if (crewId !== wo.crew_id && !(await this.loadAllows(crewId, [id]))) return;
          } catch (error) {
            return this.showError(error);
          }
          change({ crew_id: crewId });
        } },
          el("label", { for: "d-crew" }, i18n.t("detail.crew")), crewSelect, el("button", {}, i18n.t("detail.assign")),
          el("button", { type: "button", onclick: async () => {
            const ranked = await api.get(`/api/dispatch/workorders/${id}/suggest`);
            if (ranked[0]) {
              crewSelect.value = String(ranked[0].crew_id);
              suggestion.textContent = i18n.t("detail.suggested", { crew: ranked[0].crew_name, reason: ranked[0].reason });
            }
          } }, i18n.t("detail.suggest"))),
        suggestion,
        el("form", { onsubmit: (e) => { e.preventDefault(); change({ priority: Number(priority.value) }); } },
          el("label", { for: "d-priority" }, i18n.t("detail.priority")), priority, el("button", {}, i18n.t("detail.save"))),
        el("form", { onsubmit: (e) => { e.preventDefault(); if (due.value) change({ sla_due_at: new Date(due.value).toISOString() }); } },
          el("label", { for: "d-due" }, i18n.t("detail.due")), due, el("button", {}, i18n.t("detail.save"))),
        el("form", { onsubmit: (e) => { e.preventDefault(); change({ status: "cancelled", reason: reason.value }); } },
          reason, el("button", {}, i18n.t("detail.cancel"))),
        el("form", { onsubmit: async (e) => {
          e.preventDefault();
          try {
            const hits = await api.get("/api/dispatch/board", { q: mergeInput.value.trim(), limit: 2 });
            const source = hits.items.find((h) => h.id !== id);
            if (!source) return this.flash(i18n.t("detail.merge.none"));
            await api.post("/api/dispatch/merge", { target_id: id, source_id: source.id });
            await Promise.all([this.showDetail(id), this.refresh()]);
          } catch (error) {
            this.showError(error);
          }
        } }, mergeInput, el("button", {}, i18n.t("detail.merge")))),
      el("h3", {}, i18n.t("detail.cases", { count: wo.cases.length })),
      el("ul", {}, wo.cases.map((c) => el("li", {},
        `${c.external_id} · ${c.service_name} · ${this.i18n.date(c.requested_at)}`,
        // Its point is the geocoder's guess from the address, not the city's or a person's.
        c.geocoded ? el("div", { class: "hint geocoded" }, i18n.t("detail.geocoded", {
          how: i18n.t(`detail.geocoded.${c.geocoded.method}`),
          sure: i18n.number(c.geocoded.confidence, { style: "percent", maximumFractionDigits: 0 }),
        })) : "",
        c.contact ? el("div", { class: "contact" }, [c.contact.first_name, c.contact.last_name].filter(Boolean).join(" "), " ", c.contact.phone || "", " ", c.contact.email || "") : "",
        wo.cases.length > 1 ? el("button", { type: "button", onclick: async () => {
          try {
            const made = await api.post(`/api/dispatch/workorders/${id}/split`, { case_id: c.id, version: wo.version });
            this.flash(i18n.t("detail.split.done", { number: made.number }));
            await Promise.all([this.showDetail(id), this.refresh()]);
          } catch (error) {
            this.showError(error);
          }
        } }, i18n.t("detail.split")) : ""))),
      el("h3", {}, i18n.t("detail.facts")),
      el("p", {}, Object.entries(wo.facts).map(([kind, list]) => `${i18n.t(`fact.${kind}`)}: ${list.length}`).join(" · ")),
      wo.conflicts.length ? el("h3", {}, i18n.t("tab.conflicts")) : "",
      wo.conflicts.length ? this.conflictTable(wo.conflicts) : "",
      el("h3", {}, i18n.t("detail.timeline")),
      el("ol", { class: "timeline" }, wo.events.map((ev) => el("li", {}, `${this.i18n.date(ev.recorded_at)} · ${ev.kind}${ev.to_status ? " → " + ev.to_status : ""} · ${ev.actor}`))),
    );
  }

  // -- crews and routes ------------------------------------------------------------------------

  async refreshCrews() {
    const { el, i18n } = this;
    const crews = await this.api.get("/api/dispatch/crews");
    this.state.crews = crews;
    this.pane("crews").replaceChildren(el("p", { class: "hint" }, i18n.t("crews.drop.hint")), el("table", {},
      el("thead", {}, el("tr", {}, ["crews.name", "crews.open", "crews.overdue", "crews.hours"].map((k) => el("th", { scope: "col" }, i18n.t(k))))),
      el("tbody", {}, crews.map((c) => el("tr", {
        class: c.overloaded ? "overloaded" : "", "data-crew": c.id,
        // A drop of work orders dragged from the list assigns them to this crew.
        ondragover: (event) => {
          if (!event.dataTransfer.types.includes(this.dragged)) return;
          event.preventDefault();
          event.currentTarget.classList.add("drop");
        },
        ondragleave: (event) => event.currentTarget.classList.remove("drop"),
        ondrop: (event) => {
          event.preventDefault();
          event.currentTarget.classList.remove("drop");
          const ids = JSON.parse(event.dataTransfer.getData(this.dragged) || "[]");
          this.assignMany(ids, c.id);
        },
      },
        el("td", {}, el("button", { type: "button", onclick: () => { this.routeCrew = c.id; this.tab("route"); } }, c.name)),
        el("td", {}, c.open_jobs), el("td", {}, c.overdue_jobs),
        el("td", {}, i18n.t("crews.load", { hours: c.estimated_hours, capacity: c.capacity_hours }), c.overloaded ? " ⚠" : ""))))));
  }

  async route(crewId, data) {
    const { el, i18n, api } = this;
    const route = data || (await api.get(`/api/dispatch/crews/${crewId}/route`));
    const list = el("ol", { class: "route", id: "route-list" });
    for (const stop of route.stops) {
      const item = el("li", { draggable: "true", "data-id": stop.job.id }, `${stop.job.number} · ${stop.job.service_name} · ${stop.job.address || ""} `,
        el("button", { type: "button", "aria-label": i18n.t("route.up", { number: stop.job.number }), onclick: () => move(item, -1) }, "↑"),
        el("button", { type: "button", "aria-label": i18n.t("route.down", { number: stop.job.number }), onclick: () => move(item, 1) }, "↓"));
      item.addEventListener("dragstart", () => item.classList.add("dragging"));
      item.addEventListener("dragend", () => { item.classList.remove("dragging"); save(); });
      list.append(item);
    }
    list.addEventListener("dragover", (event) => {
      event.preventDefault();
      const dragging = list.querySelector(".dragging");
      const after = [...list.children].find((child) => child !== dragging && event.clientY < child.getBoundingClientRect().top + child.offsetHeight / 2);
      if (dragging) list.insertBefore(dragging, after || null);
    });
    const save = async () => {
      const ids = [...list.children].map((li) => Number(li.dataset.id));
      try {
        this.route(crewId, await api.put(`/api/dispatch/crews/${crewId}/route`, { work_order_ids: ids }));
      } catch (error) {
        this.showError(error);
      }
    };
    const move = (item, step) => {
      const sibling = step < 0 ? item.previousElementSibling : item.nextElementSibling;
      if (!sibling) return;
      step < 0 ? list.insertBefore(item, sibling) : list.insertBefore(sibling, item);
      save();
    };
    this.pane("route").replaceChildren(
      el("h2", {}, i18n.t("route.title", { crew: route.crew_name })),
      el("p", { id: "route-length" }, i18n.t("route.length", { km: route.length_km, count: route.stops.length }),
        route.start ? " · " + i18n.t("route.from", { start: route.start }) : ""),
      el("button", { type: "button", id: "route-optimise", onclick: async () => {
        try {
          this.route(crewId, await api.post(`/api/dispatch/crews/${crewId}/route/optimise`));
        } catch (error) {
          this.showError(error);
        }
      } }, i18n.t("route.optimise")),
      list);
  }

  // -- unlocated ------------------------------------------------------------------------------

  async unlocated() {
    const { el, i18n, api } = this;
    const queue = await api.get("/api/dispatch/unlocated", { limit: 100 });
    this.pane("unlocated").replaceChildren(
      el("h2", {}, i18n.t("unlocated.title", { count: queue.total })),
      el("ul", { id: "unlocated-list" }, queue.items.map((c) => el("li", { "data-case": c.id },
        el("strong", {}, `${c.external_id} · ${c.service_name}`), el("br"), c.address || i18n.t("unlocated.noaddress"),
        " · ", c.location_problem || "", el("br"),
        el("button", { type: "button", class: "place", onclick: () => this.startPlacing(c) }, i18n.t("unlocated.place")),
        c.suggested_lat !== null ? el("button", { type: "button", onclick: () => this.placeAt(c, { lat: c.suggested_lat, lng: c.suggested_lon }) },
          i18n.t("unlocated.suggested", { from: c.suggested_from })) : ""))));
  }

  startPlacing(caseItem) {
    this.placing = caseItem;
    this.map.setMode("place");
    if (caseItem.suggested_lat !== null) this.map.focus(caseItem.suggested_lat, caseItem.suggested_lon);
    this.flash(this.i18n.t("unlocated.click", { id: caseItem.external_id }));
  }

  place(latlng) {
    if (this.placing) this.placeAt(this.placing, latlng);
  }

  async placeAt(caseItem, latlng) {
    this.placing = null;
    this.map.setMode(null);
    try {
      const placed = await this.api.post(`/api/dispatch/unlocated/${caseItem.id}/place`, { lat: latlng.lat, lon: latlng.lng });
      this.flash(this.i18n.t(`unlocated.${placed.outcome}`, { id: caseItem.external_id }));
      await Promise.all([this.unlocated(), this.refresh()]);
    } catch (error) {
      this.showError(error);
    }
  }

  // -- conflicts ------------------------------------------------------------------------------

  conflictTable(rows) {
    const { el, i18n, api, showError } = this;
    const show = (value) => (value && typeof value === "object" && "value" in value ? value.value : JSON.stringify(value));
    return el("table", { class: "conflicts" },
      el("tbody", {}, rows.map((c) => el("tr", { "data-conflict": c.id },
        el("td", {}, el("strong", {}, c.work_order_number || "?"), el("br"), c.crew_name || "", el("br"), c.user_name || ""),
        el("td", {}, el("div", { class: "values" },
          el("div", {}, i18n.t("conflicts.ours"), el("br"), `${c.field}: ${show(c.server_value)}`),
          el("div", {}, i18n.t("conflicts.theirs"), el("br"), `${c.field}: ${show(c.client_value)}`))),
        el("td", {}, c.status !== "open" ? c.resolution : [
          el("button", { type: "button", onclick: () => resolve(c.id, "keep_server") }, i18n.t("conflicts.keep")),
          el("button", { type: "button", onclick: () => resolve(c.id, "take_client") }, i18n.t("conflicts.take"))])))));
    async function resolve(id, resolution) {
      try {
        await api.post(`/api/dispatch/conflicts/${id}/resolve`, { resolution });
        document.querySelectorAll(`[data-conflict="${id}"]`).forEach((row) => row.remove());
      } catch (error) {
        showError(error);
      }
    }
  }

  async conflicts() {
    const { el, i18n, api } = this;
    const [rows, refused] = await Promise.all([api.get("/api/dispatch/queue/conflicts"), api.get("/api/dispatch/queue/rejections")]);
    const dealt = async (id) => {
      try {
        await api.post(`/api/dispatch/rejections/${id}/resolve`, { resolution: i18n.t("refused.resolution") });
        document.querySelector(`[data-rejection="${id}"]`)?.remove();
      } catch (error) {
        this.showError(error);
      }
    };
    this.pane("conflicts").replaceChildren(
      el("h2", {}, i18n.t("conflicts.title", { count: rows.length })), this.conflictTable(rows),
      el("h2", {}, i18n.t("refused.title", { count: refused.length })),
      el("table", { class: "rejections" }, el("tbody", {}, refused.map((r) => el("tr", { "data-rejection": r.id },
        el("td", {}, el("strong", {}, r.work_order_number || "?"), el("br"), r.crew_name || "", el("br"), r.user_name || ""),
        el("td", {}, `${r.mutation}: ${JSON.stringify(r.args)}`, el("br"), el("em", {}, r.reason)),
        el("td", {}, el("button", { type: "button", onclick: () => dealt(r.id) }, i18n.t("refused.dealt"))))))));
  }

  // -- statistics ----------------------------------------------------------------------------

  async stats() {
    const { el, i18n } = this;
    const s = await this.api.get("/api/dispatch/stats", { ...this.state.filters, open_only: undefined });
    const pct = (g) => (g.sla_due ? `${Math.round((100 * g.sla_met) / g.sla_due)} %` : "—");
    const table = (groups) => el("table", {},
      el("thead", {}, el("tr", {}, ["stats.name", "stats.open", "stats.closed", "stats.sla", "stats.median"].map((k) => el("th", { scope: "col" }, i18n.t(k))))),
      el("tbody", {}, groups.map((g) => el("tr", {}, el("td", {}, g.name), el("td", {}, g.open), el("td", {}, g.closed), el("td", {}, pct(g)),
        el("td", {}, g.median_hours_to_close ?? "—")))));
    this.lastStats = s;
    this.pane("stats").replaceChildren(
      el("p", {}, i18n.t("stats.total", { open: s.total.open, closed: s.total.closed, sla: pct(s.total), median: s.total.median_hours_to_close ?? "—" })),
      el("h3", {}, i18n.t("stats.by_district")), table(s.by_district),
      el("h3", {}, i18n.t("stats.by_type")), table(s.by_type.slice(0, 30)));
  }

  async choropleth(on) {
    if (!on) return this.map.hideChoropleth();
    const [shapes, s] = await Promise.all([
      this.api.get("/api/districts", { geometry: "true" }),
      this.api.get("/api/dispatch/stats", { ...this.state.filters }),
    ]);
    const values = Object.fromEntries(s.by_district.map((g) => [g.key, g.open]));
    shapes.features = shapes.features.filter((f) => f.properties.primary);
    this.map.showChoropleth(shapes, values);
  }
}

function toLocalInput(iso) {
  const date = new Date(iso);
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 16);
}
