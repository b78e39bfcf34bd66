// The front page: report a problem (type, place, description, photo) and look one up.
import { api, failureText, i18n, isolate, myReports, rememberReport, show, startPage, when } from "/resident/common.js";

const MAX_SIDE = 1600; // a resized photo: enough for a crew, small on a phone's data plan
const JPEG_QUALITY = 0.82;

const form = document.getElementById("report-form");
const service = document.getElementById("service");
const address = document.getElementById("address");
const whereStatus = document.getElementById("where-status");
const photoInput = document.getElementById("photo");
const photoStatus = document.getElementById("photo-status");
const photoFigure = document.getElementById("photo-figure");
const photoPreview = document.getElementById("photo-preview");
const sendButton = document.getElementById("send");
const errors = {
  service: document.getElementById("service-error"),
  where: document.getElementById("where-error"),
  report: document.getElementById("report-error"),
};

const state = { point: null, photo: null, map: null, marker: null, photoUrl: null };


async function loadConfig() {
  try {
    const result = await api("/api/resident/config");
    return result.ok ? result.data : null;
  } catch {
    return null;
  }
}

async function loadServices() {
  let list = [];
  try {
    const result = await api("/open311/v2/services.json");
    list = result.ok ? result.data : [];
  } catch {
    list = [];
  }
  const groups = new Map();
  for (const item of list) {
    const group = item.group || "";
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(item);
  }
  const byName = (a, b) => a.localeCompare(b);
  for (const group of [...groups.keys()].sort(byName)) {
    const parent = group ? document.createElement("optgroup") : service;
    if (group) {
      parent.label = group;
      service.append(parent);
    }
    for (const item of groups.get(group).sort((a, b) => byName(a.service_name, b.service_name))) {
      const option = document.createElement("option");
      option.value = item.service_code;
      option.textContent = item.service_name;
      parent.append(option);
    }
  }
  if (!list.length) {
    errors.report.dataset.i18n = "report.service.none";
    errors.report.textContent = i18n.t("report.service.none");
    show(errors.report);
  }
  return list;
}

// -- where: the map, the phone's position, or an address ---------------------------------

function setUpMap(cfg) {
  const L = window.L;
  const element = document.getElementById("map");
  if (!L) return;
  const map = L.map(element, { keyboard: true, zoomControl: true, attributionControl: true });
  state.map = map;
  if (cfg && cfg.map.tiles_url) {
    L.tileLayer(cfg.map.tiles_url, { attribution: cfg.map.tiles_attribution, maxZoom: 19 }).addTo(map);
  }
  if (cfg && cfg.map.bounds) {
    map.fitBounds(cfg.map.bounds);
  } else {
    map.setView([0, 0], 2);
  }
  map.on("click", (event) => placePin(event.latlng.lat, event.latlng.lng, "report.where.placed"));
  // With a keyboard: arrows move the map (Leaflet), Enter places the pin at its centre.
  element.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      const centre = map.getCenter();
      placePin(centre.lat, centre.lng, "report.where.placed");
    }
  });
}

function placePin(lat, lon, messageKey) {
  state.point = { lat, lon };
  const L = window.L;
  if (state.map && L) {
    if (state.marker) state.marker.setLatLng([lat, lon]);
    else state.marker = L.marker([lat, lon], { keyboard: false }).addTo(state.map);
  }
  whereStatus.dataset.i18n = messageKey;
  whereStatus.textContent = i18n.t(messageKey);
  show(errors.where, false);
}

document.getElementById("locate").addEventListener("click", () => {
  if (!("geolocation" in navigator)) {
    say(whereStatus, "report.where.denied");
    return;
  }
  say(whereStatus, "report.where.locating");
  navigator.geolocation.getCurrentPosition(
    (position) => {
      const { latitude, longitude } = position.coords;
      placePin(latitude, longitude, "report.where.placed");
      if (state.map) state.map.setView([latitude, longitude], 17);
    },
    () => say(whereStatus, "report.where.denied"),
    { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 },
  );
});

function say(element, key, params) {
  element.dataset.i18n = key;
  element.textContent = i18n.t(key, params);
}

// -- the photo, resized on the phone -----------------------------------------------------

photoInput.addEventListener("change", async () => {
  clearPhoto(false);
  const file = photoInput.files && photoInput.files[0];
  if (!file) return;
  say(photoStatus, "report.photo.resizing");
  try {
    state.photo = await resize(file);
  } catch {
    photoInput.value = "";
    say(photoStatus, "report.photo.bad");
    return;
  }
  state.photoUrl = URL.createObjectURL(state.photo);
  photoPreview.src = state.photoUrl;
  show(photoFigure);
  photoStatus.removeAttribute("data-i18n");
  photoStatus.textContent = i18n.t("report.photo.ready", { size: Math.ceil(state.photo.size / 1024) });
});

document.getElementById("photo-remove").addEventListener("click", () => clearPhoto(true));

function clearPhoto(resetInput) {
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photo = null;
  state.photoUrl = null;
  photoPreview.removeAttribute("src");
  show(photoFigure, false);
  photoStatus.textContent = "";
  if (resetInput) photoInput.value = "";
}

async function resize(file) {
  if (!file.type.startsWith("image/")) throw new Error("not an image");
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  if (!blob) throw new Error("could not encode");
  return blob;
}

// -- sending -------------------------------------------------------------------------------

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  for (const element of Object.values(errors)) show(element, false);
  let firstProblem = null;
  if (!service.value) {
    say(errors.service, "report.errors.service");
    show(errors.service);
    firstProblem = firstProblem || service;
  }
  if (!state.point && !address.value.trim()) {
    say(errors.where, "report.errors.where");
    show(errors.where);
    firstProblem = firstProblem || address;
  }
  if (firstProblem) {
    firstProblem.focus();
    return;
  }
  const body = new FormData();
  body.set("service_code", service.value);
  if (state.point) {
    body.set("lat", state.point.lat.toFixed(6));
    body.set("long", state.point.lon.toFixed(6));
  }
  if (address.value.trim()) body.set("address_string", address.value.trim());
  const description = document.getElementById("description").value.trim();
  if (description) body.set("description", description);
  body.set("language", i18n.language);
  if (state.photo) body.set("photo", state.photo, "photo.jpg");

  sendButton.disabled = true;
  say(sendButton, "report.sending");
  let result = null;
  try {
    result = await api("/api/resident/reports", { method: "POST", body });
  } catch (error) {
    fail(failureText(error));
    return;
  } finally {
    sendButton.disabled = false;
    say(sendButton, "report.submit");
  }
  if (!result.ok) {
    fail(problemText(result));
    return;
  }
  done(result.data);
});

function problemText(result) {
  const field = result.data && result.data.field;
  if (result.status === 429) return i18n.t("error.rate");
  if (field === "service_code") return i18n.t("report.errors.service");
  if (["lat", "long", "location", "address_string"].includes(field)) return i18n.t("report.errors.where");
  if (field === "photo") return i18n.t("report.photo.bad");
  if (result.status === 400 && result.data && result.data.detail) {
    return i18n.t("error.field", { detail: result.data.detail });
  }
  return failureText(null, result);
}

function fail(text) {
  errors.report.removeAttribute("data-i18n");
  errors.report.textContent = text;
  show(errors.report);
}

function done(report) {
  rememberReport({ token: report.token, number: report.service_request_id, at: new Date().toISOString(),
    service: service.selectedOptions[0] ? service.selectedOptions[0].textContent : "" });
  show(form, false);
  const panel = show(document.getElementById("report-done"));
  const number = document.getElementById("done-number");
  number.textContent = i18n.t("done.number", { number: isolate(report.service_request_id) });
  document.getElementById("done-notice").textContent = report.notice;
  const link = document.getElementById("done-track");
  link.href = `${report.track_url}?lang=${encodeURIComponent(i18n.language)}`;
  panel.querySelector("h2").focus();
  renderMine();
}

document.getElementById("done-another").addEventListener("click", () => {
  form.reset();
  clearPhoto(true);
  state.point = null;
  if (state.marker) {
    state.marker.remove();
    state.marker = null;
  }
  whereStatus.textContent = "";
  show(document.getElementById("report-done"), false);
  show(form);
  document.getElementById("report-title").focus();
});

// -- looking a report up -------------------------------------------------------------------

document.getElementById("lookup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const ref = document.getElementById("lookup-ref").value.trim();
  const token = ref.includes("/track/") ? ref.split("/track/").pop().split(/[?#]/)[0] : ref;
  if (token) location.assign(`/track/${encodeURIComponent(token)}`);
});

function renderMine() {
  const mine = myReports();
  const list = document.getElementById("mine-list");
  list.replaceChildren(...mine.map((report) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/track/${encodeURIComponent(report.token)}`;
    link.textContent = `${i18n.t("track.number", { number: isolate(report.number) })}${report.service ? ` · ${isolate(report.service)}` : ""}`;
    const time = document.createElement("time");
    time.dateTime = report.at;
    time.textContent = ` · ${when(report.at, { dateStyle: "medium" })}`;
    item.append(link, time);
    return item;
  }));
  show(document.getElementById("mine"), mine.length > 0);
}

// Start: every listener above is in place before the first await, so a quick tap is
// never lost to a half-loaded page.
await startPage();
const [config] = await Promise.all([loadConfig(), loadServices()]);
setUpMap(config);
renderMine();
i18n.onChange(() => {
  renderMine();
  if (state.photo) photoStatus.textContent = i18n.t("report.photo.ready", { size: Math.ceil(state.photo.size / 1024) });
});
