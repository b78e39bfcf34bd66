// The day on a map (Leaflet, served by our server from /vendor/leaflet/). Without tiles
// (no signal, a blocked tile server) the map is no use: the app says so and shows the list.

import * as store from "../store.js";
import { $, h, isolate, t } from "../ui.js";

let map = null;
let layer = null;
let failed = false;
let loaded = 0;

function onTilesFailed(fallback) {
  if (failed || loaded > 0) return;
  failed = true;
  $("map-failed").hidden = false; // said above the list
  fallback();
}

/** Draw the jobs; `fallback()` is called (once) when no tile can be loaded. */
export function renderMap(jobs, fallback) {
  if (typeof L === "undefined") { // Leaflet did not load (offline before it was cached)
    failed = true;
    $("map-failed").hidden = false;
    fallback();
    return;
  }
  if (failed) {
    fallback();
    return;
  }
  const workflow = store.getWorkflow();
  if (!map) {
    map = L.map("map", { zoomControl: true });
    const tiles = L.tileLayer(workflow?.map?.tiles_url || "https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      attribution: workflow?.map?.tiles_attribution || "", maxZoom: 19,
    });
    tiles.on("tileload", () => { loaded += 1; });
    tiles.on("tileerror", () => onTilesFailed(fallback));
    tiles.addTo(map);
    layer = L.layerGroup().addTo(map);
    // A tile server that never answers is as bad as one that refuses.
    setTimeout(() => onTilesFailed(fallback), 15_000);
  }
  layer.clearLayers();
  const points = [];
  jobs.filter((job) => store.statusKind(job.status) === "open" && !job.leaving).forEach((job, index) => {
    if (typeof job.lat !== "number") return;
    const icon = L.divIcon({ className: `pin p${job.priority}${job.emergency ? " emergency" : ""}`, html: String(index + 1), iconSize: [36, 36] });
    const marker = L.marker([job.lat, job.lon], { icon, title: job.number, keyboard: true });
    marker.bindPopup(() => h("div", {}, h("strong", {}, isolate(job.number)), h("br"), job.type_name, h("br"),
      job.address || "", h("br"), h("a", { href: `#/job/${job.id}` }, t("map.open"))));
    marker.addTo(layer);
    points.push([job.lat, job.lon]);
  });
  if (points.length) map.fitBounds(points, { padding: [24, 24], maxZoom: 16 });
  else map.setView([0, 0], 2);
  setTimeout(() => map.invalidateSize(), 0);
}
