// The resident pages' service worker (scope /). It serves the report and tracking pages
// and their assets offline-first, shows push notices and opens the tracking page when one
// is clicked, and re-registers a subscription the browser replaces.
//
// Everything else under / is not ours: the crew app (/crew/, its own worker), the
// dispatcher console (/dispatch/), /api, /sync, /open311 and the rest pass straight
// through to the network (no respondWith), so this worker never interferes with them.
const VERSION = "2026-12-04.2";
const PREFIX = "fieldwork-resident-";
const CACHE = `${PREFIX}${VERSION}`;
const LANGUAGES = ["en", "es", "zh-Hans", "ru", "bn", "ht", "ko", "ar", "fr"];
const SHELL = "/";
const TRACK_SHELL = "/track.html";
const PRECACHE = [
  SHELL,
  TRACK_SHELL,
  "/resident/resident.css",
  "/resident/common.js",
  "/resident/report.js",
  "/resident/track.js",
  "/lib/i18n.js",
  "/crew/icons/icon-192.png", // the pages' icon
  "/vendor/leaflet/leaflet.js",
  "/vendor/leaflet/leaflet.css",
  "/vendor/leaflet/images/marker-icon.png",
  "/vendor/leaflet/images/marker-icon-2x.png",
  "/vendor/leaflet/images/marker-shadow.png",
  ...LANGUAGES.map((code) => `/locales/resident/${code}.json`),
];
const ASSET_PREFIXES = ["/resident/", "/locales/resident/", "/vendor/leaflet/"];
const ASSETS = new Set(["/lib/i18n.js", "/sw.js", "/crew/icons/icon-192.png"]);

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(PRECACHE)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    const names = await caches.keys();
    await Promise.all(names.filter((n) => n.startsWith(PREFIX) && n !== CACHE).map((n) => caches.delete(n)));
    await self.clients.claim();
  })());
});

function isPage(url) {
  return url.pathname === "/" || url.pathname === "/index.html" || url.pathname.startsWith("/track/")
    || url.pathname === TRACK_SHELL;
}

function isAsset(url) {
  return ASSETS.has(url.pathname) || ASSET_PREFIXES.some((prefix) => url.pathname.startsWith(prefix));
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (isPage(url) && request.mode === "navigate") {
    event.respondWith(page(request, url));
  } else if (isAsset(url)) {
    event.respondWith(asset(request));
  }
  // anything else: not ours, straight to the network
});

// Pages: the network first (a case changes), the cached shell when offline.
async function page(request, url) {
  try {
    const response = await fetch(request);
    if (response.ok && (url.pathname === "/" || url.pathname === "/index.html")) {
      const cache = await caches.open(CACHE);
      await cache.put(SHELL, response.clone());
    }
    return response;
  } catch (error) {
    const cached = await caches.match(url.pathname.startsWith("/track") ? TRACK_SHELL : SHELL);
    if (cached) return cached;
    throw error;
  }
}

// Assets: from the cache, refreshed in the background.
async function asset(request) {
  const cache = await caches.open(CACHE);
  const cached = await cache.match(request, { ignoreSearch: true });
  const refresh = fetch(request).then((response) => {
    if (response.ok) cache.put(request, response.clone());
    return response;
  });
  if (cached) {
    refresh.catch(() => null);
    return cached;
  }
  return refresh;
}

// -- push ------------------------------------------------------------------------------------

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { body: event.data ? event.data.text() : "" };
  }
  const title = data.title || self.location.host;
  event.waitUntil(self.registration.showNotification(title, {
    body: data.body || "",
    tag: data.tag,
    lang: data.lang,
    dir: data.dir || "auto",
    data: { url: data.url || "/" },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const opened = openTracking(event.notification.data && event.notification.data.url);
  try {
    event.waitUntil(opened);
  } catch {
    // waitUntil refuses an event that a page dispatched itself; the work still runs
  }
});

// Open the notice's page: in a window of ours if one is open (focused, then navigated),
// else in a new one. Only our own origin's resident pages.
async function openTracking(url) {
  const target = new URL(url || "/", self.location.origin);
  if (target.origin !== self.location.origin || !isPage(target)) return null;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: false });
  const ours = windows.find((client) => new URL(client.url).pathname === target.pathname)
    || windows.find((client) => isPage(new URL(client.url)));
  if (!ours) return self.clients.openWindow(target.href);
  try {
    await ours.focus();
  } catch {
    // focusing needs the user's click; navigating does not
  }
  return ours.url === target.href ? ours : ours.navigate(target.href);
}

// The page tells us the endpoint it registered: kept for pushsubscriptionchange.
self.addEventListener("message", (event) => {
  if (event.data && event.data.type === "subscribed" && event.data.endpoint) {
    event.waitUntil(remember(event.data.endpoint));
  }
});

async function remember(endpoint) {
  const cache = await caches.open(`${PREFIX}state`);
  await cache.put("/__push-endpoint", new Response(endpoint));
}

async function remembered() {
  const cache = await caches.open(`${PREFIX}state`);
  const response = await cache.match("/__push-endpoint");
  return response ? response.text() : null;
}

function keyBytes(base64url) {
  const text = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(text + "=".repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

// The browser replaced the subscription: subscribe again if it did not, and move every
// report this browser follows to the new endpoint.
self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil((async () => {
    const old = (event.oldSubscription && event.oldSubscription.endpoint) || (await remembered());
    let fresh = event.newSubscription;
    if (!fresh) {
      const key = await fetch("/api/push/vapid-public-key").then((r) => r.json());
      fresh = await self.registration.pushManager.subscribe({
        userVisibleOnly: true, applicationServerKey: keyBytes(key.public_key),
      });
    }
    if (old) {
      await fetch("/api/push/renew", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ old_endpoint: old, subscription: fresh.toJSON() }),
      });
    }
    await remember(fresh.endpoint);
  })());
});
