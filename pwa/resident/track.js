// The tracking page, /track/{our number | token | the city's number}: the case in plain
// words, its timeline, the honest expected range, and "Notify me" (Web Push) when the
// page was opened with the reporter's own token.
import { api, failureText, i18n, isolate, postJSON, registerServiceWorker, show, startPage, when } from "/resident/common.js";

const ref = decodeURIComponent(location.pathname.replace(/^\/track\/?/, "").split("/")[0] || "");
const elements = Object.fromEntries(
  ["track", "track-loading", "track-error", "case", "case-urgent", "case-title", "case-address", "case-state",
    "case-expected", "case-basis", "case-resolution", "resolution-text", "notify", "notify-on", "notify-off",
    "notify-status", "case-number", "case-city-number", "case-reported", "case-reports", "timeline", "case-photo",
    "case-photo-img"].map((id) => [id, document.getElementById(id)]),
);
const STATE_CLASS = { fixed: "fixed", not_fixed: "closed", cancelled: "closed", duplicate: "closed" };
const NOTIFY_KEY = (token) => `fieldwork.resident.notify.${token}`;

let report = null;
let pushConfigured = false;

await startPage();
i18n.onChange(() => {
  if (report) render(report);
  if (report && isSubscribed()) subscribe(); // the notices follow the page's language
});
await load();

async function load() {
  if (!ref) {
    location.replace("/#lookup");
    return;
  }
  let result;
  try {
    const [found, config] = await Promise.all([
      api(`/api/resident/track/${encodeURIComponent(ref)}`),
      api("/api/resident/config").catch(() => null),
    ]);
    result = found;
    pushConfigured = Boolean(config && config.ok && config.data.push);
  } catch (error) {
    return failed(failureText(error));
  }
  if (result.status === 404) return failed(i18n.t("track.not_found"), "track.not_found");
  if (!result.ok) return failed(failureText(null, result));
  report = result.data;
  render(report);
  setUpNotify();
  elements["case-title"].focus();
}

function failed(text, key) {
  show(elements["track-loading"], false);
  const box = elements["track-error"];
  if (key) box.dataset.i18n = key;
  box.textContent = text;
  show(box);
  elements.track.setAttribute("aria-busy", "false");
}

function render(data) {
  show(elements["track-loading"], false);
  elements.track.setAttribute("aria-busy", "false");
  elements["case-title"].textContent = data.service_name;
  elements["case-address"].textContent = data.address || "";
  show(elements["case-urgent"], data.emergency);
  const stateBox = elements["case-state"];
  stateBox.textContent = i18n.t(`state.${data.state}`);
  stateBox.className = `state ${STATE_CLASS[data.state] || "open"}`;
  renderExpected(data.expected);
  show(elements["case-resolution"], Boolean(data.resolution) && !data.open);
  elements["resolution-text"].textContent = data.resolution || "";
  elements["case-number"].textContent = i18n.t("track.number", { number: isolate(data.service_request_id) });
  elements["case-city-number"].textContent = data.city_request_id
    ? i18n.t("track.city_number", { number: isolate(data.city_request_id) }) : "";
  show(elements["case-city-number"], Boolean(data.city_request_id));
  elements["case-reported"].textContent = i18n.t("track.reported", { date: when(data.requested_at) });
  elements["case-reports"].textContent = i18n.t("track.reports", { count: data.reports });
  show(elements["case-reports"], data.reports > 1);
  renderTimeline(data.timeline);
  if (data.media_url) {
    elements["case-photo-img"].src = data.media_url;
    show(elements["case-photo"]);
  }
  show(elements.case);
}

function renderExpected(expected) {
  const line = elements["case-expected"];
  const basis = elements["case-basis"];
  line.textContent = "";
  basis.textContent = "";
  if (!expected) return;
  const day = (value) => when(value, { weekday: "short", day: "numeric", month: "short", hour: "numeric", minute: "2-digit" });
  if (expected.overdue) {
    line.textContent = i18n.t("expected.overdue");
  } else if (expected.basis === "sla") {
    line.textContent = i18n.t(expected.emergency ? "expected.emergency_sla" : "expected.sla", { high: day(expected.high_at) });
  } else {
    line.textContent = i18n.t("expected.range", { low: day(expected.low_at), high: day(expected.high_at) });
    basis.textContent = i18n.t(`expected.basis.${expected.basis}`, { count: expected.sample_size });
  }
}

function renderTimeline(entries) {
  const items = entries.map((entry) => {
    const item = document.createElement("li");
    item.dataset.kind = entry.kind;
    const time = document.createElement("time");
    time.dateTime = entry.at;
    time.textContent = when(entry.at);
    const what = document.createElement("span");
    what.className = "what";
    what.textContent = i18n.t(`timeline.${entry.kind}`, entry.count ? { count: entry.count } : {});
    item.append(time, what);
    if (entry.detail) {
      const detail = document.createElement("p");
      detail.className = "detail";
      detail.textContent = i18n.t("timeline.detail", { detail: isolate(entry.detail) });
      item.append(detail);
    }
    return item;
  });
  elements.timeline.replaceChildren(...items.reverse()); // newest first
}

// -- notices -------------------------------------------------------------------------------

function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function isSubscribed() {
  try {
    return Boolean(report && report.token && localStorage.getItem(NOTIFY_KEY(report.token)));
  } catch {
    return false;
  }
}

function setNotifyStatus(key) {
  const status = elements["notify-status"];
  status.dataset.i18n = key;
  status.textContent = i18n.t(key);
}

function setUpNotify() {
  show(elements.notify);
  if (!report.can_subscribe) {
    show(elements["notify-on"], false);
    return setNotifyStatus("notify.need_token");
  }
  if (!pushConfigured) {
    show(elements["notify-on"], false);
    return setNotifyStatus("notify.unavailable");
  }
  if (!pushSupported()) {
    show(elements["notify-on"], false);
    return setNotifyStatus("notify.unsupported");
  }
  const on = isSubscribed();
  show(elements["notify-on"], !on);
  show(elements["notify-off"], on);
  if (on) setNotifyStatus("notify.on");
}

elements["notify-on"].addEventListener("click", () => subscribe());
elements["notify-off"].addEventListener("click", () => unsubscribe());

function keyBytes(base64url) {
  const text = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(text + "=".repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function browserSubscription() {
  await registerServiceWorker();
  const registration = await navigator.serviceWorker.ready;
  const existing = await registration.pushManager.getSubscription();
  if (existing) return { registration, subscription: existing };
  const key = await api("/api/push/vapid-public-key");
  if (!key.ok) throw new Error("no key");
  const subscription = await registration.pushManager.subscribe({
    userVisibleOnly: true, applicationServerKey: keyBytes(key.data.public_key),
  });
  return { registration, subscription };
}

async function subscribe() {
  const button = elements["notify-on"];
  button.disabled = true;
  try {
    const permission = await Notification.requestPermission();
    if (permission !== "granted") return setNotifyStatus("notify.denied");
    const { registration, subscription } = await browserSubscription();
    const result = await postJSON(`/api/resident/track/${encodeURIComponent(report.token)}/subscription`, {
      subscription: subscription.toJSON(), language: i18n.language,
    });
    if (!result.ok) return setNotifyStatus("notify.failed");
    localStorage.setItem(NOTIFY_KEY(report.token), subscription.endpoint);
    // The service worker keeps the endpoint, to move the bindings if the browser renews it.
    if (registration.active) registration.active.postMessage({ type: "subscribed", endpoint: subscription.endpoint });
    show(button, false);
    show(elements["notify-off"]);
    setNotifyStatus("notify.on");
  } catch {
    setNotifyStatus("notify.failed");
  } finally {
    button.disabled = false;
  }
}

async function unsubscribe() {
  const endpoint = localStorage.getItem(NOTIFY_KEY(report.token));
  try {
    if (endpoint) {
      await postJSON(`/api/resident/track/${encodeURIComponent(report.token)}/subscription`, { endpoint }, "DELETE");
    }
  } catch {
    return setNotifyStatus("notify.failed");
  }
  localStorage.removeItem(NOTIFY_KEY(report.token));
  show(elements["notify-off"], false);
  show(elements["notify-on"]);
  setNotifyStatus("notify.off");
}
