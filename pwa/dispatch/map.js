// The map: every matching work order drawn on one canvas straight from the /map arrays (no
// marker object per job, so tens of thousands draw in milliseconds and pan smoothly), grouped
// into numbered clusters until zoom CLUSTER_UNTIL; box selection, placing an unlocated case
// with a click, the district outlines under everything (the map is still readable when no
// tile loads) and the district choropleth.

const L = window.L;
const CLUSTER_UNTIL = 16; // from this zoom on every job is its own dot
const CELL = 56; // px: the jobs in one cell of this size are one cluster
const CLUSTER_MIN = 6; // fewer jobs than this in a cell are drawn as dots
const DOT = 6; // px radius
const HIT = 9; // px: how near a click must be to a dot
const COLOURS = { 1: "#d7191c", 2: "#fdae61", 3: "#2b83ba", 4: "#7b9fb9" };
const SELECTED = "#ffd400";
const EMERGENCY = "#b00020";

/** Web Mercator pixels at zoom 0 (Leaflet's EPSG:3857 at 256 px a tile): times 2^z at zoom z. */
const mercatorX = (lon) => ((lon + 180) / 360) * 256;
function mercatorY(lat) {
  const s = Math.sin((Math.max(-85.0511287798, Math.min(85.0511287798, lat)) * Math.PI) / 180);
  return (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * 256;
}

/** One canvas over the map (a Leaflet renderer: it follows pans and zoom animations). */
const PointCanvas = L.Renderer.extend({
  options: { padding: 0.1, pane: "jobs" },

  initialize(owner) {
    L.Renderer.prototype.initialize.call(this, {});
    this.owner = owner;
  },

  _initContainer() {
    this._container = document.createElement("canvas");
    this._ctx = this._container.getContext("2d");
  },

  _destroyContainer() {
    L.DomUtil.remove(this._container);
    delete this._container;
  },

  _updatePaths() {},

  _update() {
    if (this._map._animatingZoom && this._bounds) return;
    L.Renderer.prototype._update.call(this);
    const b = this._bounds;
    const size = b.getSize();
    const ratio = window.devicePixelRatio || 1;
    L.DomUtil.setPosition(this._container, b.min);
    this._container.width = ratio * size.x;
    this._container.height = ratio * size.y;
    this._container.style.width = `${size.x}px`;
    this._container.style.height = `${size.y}px`;
    this._ctx.setTransform(ratio, 0, 0, ratio, -ratio * b.min.x, -ratio * b.min.y);
    this.owner.draw(this._ctx, b, this._map);
  },
});

export class WorkMap {
  constructor(element, { onOpen, onBox, onPlace, label, clusterLabel }) {
    this.map = L.map(element, { boxZoom: false, minZoom: 8, maxZoom: 19 }).setView([34.05, -118.3], 10);
    this.map.createPane("outlines").style.zIndex = 350; // under the choropleth and the jobs
    this.map.createPane("jobs").style.zIndex = 450;
    this.map.getPane("jobs").style.pointerEvents = "none"; // clicks reach the map: hit-tested here
    this.onOpen = onOpen;
    this.onBox = onBox;
    this.onPlace = onPlace;
    this.label = label;
    this.clusterLabel = clusterLabel;
    this.data = null;
    this.x0 = new Float64Array(0); // the jobs' Mercator pixels at zoom 0
    this.y0 = new Float64Array(0);
    this.drawn = { dots: [], clusters: [] }; // what the last draw put where (for clicks)
    this.xs = null; // the jobs' pixels in the last draw
    this.ys = null;
    this.selected = new Set();
    this.mode = null; // null | "box" | "place"
    this.fitted = false;
    this.choropleth = null;
    this.outlines = null;
    this.canvas = new PointCanvas(this);
    this.canvas.addTo(this.map);
    this.#boxHandlers();
    this.#pointHandlers();
  }

  tiles(url, attribution) {
    if (url) L.tileLayer(url, { attribution, maxZoom: 19 }).addTo(this.map);
  }

  /** The districts' outlines and names: the base map when no tile loads (no network). */
  showOutlines(geojson) {
    this.outlines?.remove();
    this.outlines = L.geoJSON(geojson, {
      pane: "outlines",
      interactive: false,
      style: () => ({ color: "#56697f", weight: 1.5, fillColor: "#e9eef3", fillOpacity: 0.5 }),
      onEachFeature: (feature, layer) => layer.bindTooltip(feature.properties.name, {
        permanent: true, direction: "center", className: "district-name", interactive: false, pane: "outlines",
      }),
    }).addTo(this.map);
    this.map.getContainer().dataset.outlines = String(geojson.features.length);
  }

  /** Show `data` (the /map arrays); the selection is kept. */
  show(data) {
    this.data = data;
    this.x0 = new Float64Array(data.count);
    this.y0 = new Float64Array(data.count);
    for (let i = 0; i < data.count; i++) {
      this.x0[i] = mercatorX(data.lon[i]);
      this.y0[i] = mercatorY(data.lat[i]);
    }
    if (!this.fitted && data.count) {
      this.fitted = true;
      let [south, west, north, east] = [90, 180, -90, -180];
      for (let i = 0; i < data.count; i++) {
        south = Math.min(south, data.lat[i]); north = Math.max(north, data.lat[i]);
        west = Math.min(west, data.lon[i]); east = Math.max(east, data.lon[i]);
      }
      // At once (no animation): the first screen is drawn once, where it stays.
      this.map.fitBounds([[south, west], [north, east]], { padding: [20, 20], animate: false });
    }
    if (this.drawnData !== data) this.redraw(); // (a move of the view has drawn it already)
    this.map.getContainer().dataset.markers = String(data.count);
  }

  redraw() {
    if (this.canvas._map) this.canvas._update();
  }

  /** Draw the jobs in view: dots, or numbered clusters where they crowd (below CLUSTER_UNTIL).
   * Typed arrays and number keys: with tens of thousands of jobs, every object made per job
   * shows as garbage collection on each pan. */
  draw(ctx, bounds, map) {
    const data = this.data;
    const count = data ? data.count : 0;
    if (!this.xs || this.xs.length !== count) {
      this.xs = new Float64Array(count);
      this.ys = new Float64Array(count);
    }
    const { xs, ys } = this;
    const clusters = [];
    const dots = [];
    this.drawn = { dots, clusters };
    this.drawnData = data;
    if (!count) return;
    const zoom = map.getZoom();
    const scale = 2 ** zoom;
    const origin = map.getPixelOrigin();
    const minX = bounds.min.x - DOT, minY = bounds.min.y - DOT, maxX = bounds.max.x + DOT, maxY = bounds.max.y + DOT;
    let visible = 0;
    const clustering = zoom < CLUSTER_UNTIL;
    const cells = new Map(); // cell number -> the jobs in it
    for (let i = 0; i < count; i++) {
      const x = this.x0[i] * scale - origin.x;
      const y = this.y0[i] * scale - origin.y;
      if (x < minX || x > maxX || y < minY || y > maxY) continue;
      xs[i] = x;
      ys[i] = y;
      visible++;
      if (!clustering) {
        dots.push(i);
        continue;
      }
      // Cells on the world's pixel grid (a pan does not regroup the jobs), numbered row by row.
      const key = Math.floor((y + origin.y) / CELL) * 4194304 + Math.floor((x + origin.x) / CELL);
      const cell = cells.get(key);
      if (cell) cell.push(i);
      else cells.set(key, [i]);
    }
    for (const members of cells.values()) {
      if (members.length < CLUSTER_MIN) {
        for (const i of members) dots.push(i);
        continue;
      }
      let sx = 0, sy = 0, emergency = false, selected = false;
      for (const i of members) {
        sx += xs[i];
        sy += ys[i];
        emergency ||= (data.flags[i] & 1) === 1;
        selected ||= this.selected.size > 0 && this.selected.has(data.id[i]);
      }
      const r = members.length < 50 ? 15 : members.length < 500 ? 19 : 23;
      clusters.push({ x: sx / members.length, y: sy / members.length, r, members, emergency });
      // Selected jobs show even inside a cluster: the dispatcher sees what a box picked.
      if (selected) for (const i of members) if (this.selected.has(data.id[i])) dots.push(i);
    }
    for (const c of clusters) {
      ctx.beginPath();
      ctx.arc(c.x, c.y, c.r + 4, 0, 2 * Math.PI);
      ctx.fillStyle = c.emergency ? "rgba(176, 0, 32, 0.35)" : "rgba(11, 79, 156, 0.25)";
      ctx.fill();
      ctx.beginPath();
      ctx.arc(c.x, c.y, c.r, 0, 2 * Math.PI);
      ctx.fillStyle = c.emergency ? EMERGENCY : "#0b4f9c";
      ctx.fill();
    }
    ctx.fillStyle = "#fff";
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    for (const c of clusters) ctx.fillText(String(c.members.length), c.x, c.y);
    // One path per colour (and one per ring): a few fills however many dots.
    const paths = { 1: new Path2D(), 2: new Path2D(), 3: new Path2D(), 4: new Path2D() };
    const emergencies = new Path2D();
    const picked = new Path2D();
    for (const i of dots) {
      const x = xs[i], y = ys[i];
      const path = paths[data.priority[i]] || paths[4];
      path.moveTo(x + DOT, y);
      path.arc(x, y, DOT, 0, 2 * Math.PI);
      if (data.flags[i] & 1) {
        emergencies.moveTo(x + DOT + 3, y);
        emergencies.arc(x, y, DOT + 3, 0, 2 * Math.PI);
      }
      if (this.selected.size && this.selected.has(data.id[i])) {
        picked.moveTo(x + DOT + 3, y);
        picked.arc(x, y, DOT + 3, 0, 2 * Math.PI);
      }
    }
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    for (const [priority, colour] of Object.entries(COLOURS)) {
      ctx.fillStyle = colour;
      ctx.fill(paths[priority]);
      ctx.stroke(paths[priority]);
    }
    ctx.lineWidth = 3;
    ctx.strokeStyle = EMERGENCY;
    ctx.stroke(emergencies);
    ctx.strokeStyle = SELECTED;
    ctx.stroke(picked);
    this.map.getContainer().dataset.drawn = String(visible);
  }

  /** What is under a container point: a dot (its job's index), a cluster, or nothing. */
  hit(containerPoint) {
    const p = this.map.containerPointToLayerPoint(containerPoint);
    let best = -1;
    let bestDistance = HIT * HIT;
    for (const i of this.drawn.dots) {
      const d = (this.xs[i] - p.x) ** 2 + (this.ys[i] - p.y) ** 2;
      if (d <= bestDistance) [best, bestDistance] = [i, d];
    }
    if (best >= 0) return { dot: best };
    for (const c of this.drawn.clusters) {
      if ((c.x - p.x) ** 2 + (c.y - p.y) ** 2 <= (c.r + 4) ** 2) return { cluster: c };
    }
    return null;
  }

  /** Redraw with a new selection. */
  select(ids) {
    this.selected = new Set(ids);
    this.redraw();
  }

  focus(lat, lon) {
    this.map.setView([lat, lon], Math.max(this.map.getZoom(), 16));
  }

  setMode(mode) {
    this.mode = mode;
    this.map.getContainer().style.cursor = mode ? "crosshair" : "";
    if (mode === "box") this.map.dragging.disable();
    else this.map.dragging.enable();
  }

  #pointHandlers() {
    const container = this.map.getContainer();
    let pending = false;
    this.map.on("mousemove", (event) => {
      if (this.mode || pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        const found = this.hit(event.containerPoint);
        container.classList.toggle("over-job", Boolean(found));
        container.title = found?.dot !== undefined ? this.label(this.data, found.dot)
          : found?.cluster ? this.clusterLabel(found.cluster.members.length) : "";
      });
    });
    this.map.on("click", (event) => this.#click(event));
  }

  /** A click on the map (or on a district of the choropleth, which would keep it). */
  #click(event) {
    if (this.mode === "place") return this.onPlace(event.latlng);
    if (this.mode) return;
    const found = this.hit(event.containerPoint);
    if (found?.dot !== undefined) return this.onOpen(this.data.id[found.dot]);
    if (found?.cluster) {
      const { lat, lon } = this.data;
      const points = found.cluster.members.map((i) => [lat[i], lon[i]]);
      this.map.fitBounds(points, { padding: [40, 40], maxZoom: CLUSTER_UNTIL });
    }
  }

  #boxHandlers() {
    let start = null;
    let rect = null;
    this.map.on("mousedown", (event) => {
      if (this.mode !== "box") return;
      start = event.latlng;
      rect = L.rectangle([start, start], { color: "#ffd400", weight: 2 }).addTo(this.map);
    });
    this.map.on("mousemove", (event) => {
      if (start && rect) rect.setBounds(L.latLngBounds(start, event.latlng));
    });
    this.map.on("mouseup", (event) => {
      if (!start || !rect) return;
      const bounds = L.latLngBounds(start, event.latlng);
      rect.remove();
      start = rect = null;
      const ids = [];
      const data = this.data;
      for (let i = 0; data && i < data.count; i++) {
        if (bounds.contains([data.lat[i], data.lon[i]])) ids.push(data.id[i]);
      }
      this.onBox(ids);
    });
  }

  /** Districts coloured by a value (open work orders), with a legend in the title. */
  showChoropleth(geojson, values) {
    this.hideChoropleth();
    const max = Math.max(1, ...Object.values(values));
    this.choropleth = L.geoJSON(geojson, {
      style: (feature) => {
        const share = (values[String(feature.properties.id)] || 0) / max;
        return { color: "#333", weight: 1, fillColor: `rgb(${Math.round(255 - 80 * share)}, ${Math.round(240 - 200 * share)}, ${Math.round(200 - 180 * share)})`, fillOpacity: 0.6 };
      },
      onEachFeature: (feature, layer) => {
        layer.bindTooltip(`${feature.properties.name}: ${values[String(feature.properties.id)] || 0}`);
        layer.on("click", (event) => this.#click(event));
      },
    }).addTo(this.map);
    this.choropleth.bringToBack();
  }

  hideChoropleth() {
    this.choropleth?.remove();
    this.choropleth = null;
  }
}
