// The crew app's service worker (scope /crew/). A versioned precache of the app shell:
// install awaits it; activate deletes only our own older caches; navigations get this
// version's cached shell first (the network only if the cache has lost it: a weak signal
// never delays the start), and the shell's files come from the same cache. A new shell
// arrives as a new version (below). API calls are never cached: edits go through the
// outbox in IndexedDB, and /sync, /api go straight to the network.
//
// A new version installs and then WAITS: the page offers "Update available" and sends
// "skip-waiting" only when the crew taps it and no form is half filled in.
const VERSION = "2026-12-04.4";
const PREFIX = "fieldwork-crew-";
const CACHE = `${PREFIX}${VERSION}`;
const SHELL = "/crew/";
const PRECACHE = [
  SHELL,
  "/crew/app.js",
  "/crew/store.js",
  "/crew/ui.js",
  "/crew/photo.js",
  "/crew/views/list.js",
  "/crew/views/job.js",
  "/crew/views/map.js",
  "/crew/views/attention.js",
  "/crew/crew.css",
  "/crew/manifest.webmanifest",
  "/crew/icons/icon-192.png",
  "/crew/icons/icon-512.png",
  "/lib/i18n.js",
  "/lib/sync/client.js",
  "/lib/sync/db.js",
  "/lib/sync/outbox.js",
  "/locales/crew/en.json",
  "/locales/crew/es.json",
  "/vendor/leaflet/leaflet.js",
  "/vendor/leaflet/leaflet.css",
];
const CACHED = new Set(PRECACHE);

self.addEventListener("install", (event) => {
  // `cache: "reload"`: the shell comes from the server, not from the HTTP cache.
  event.waitUntil(caches.open(CACHE).then((cache) =>
    cache.addAll(PRECACHE.map((url) => new Request(url, { cache: "reload" })))));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    const names = await caches.keys();
    await Promise.all(names.filter((n) => n.startsWith(PREFIX) && n !== CACHE).map((n) => caches.delete(n)));
    await self.clients.claim();
  })());
});

self.addEventListener("message", (event) => {
  const type = event.data?.type;
  if (type === "skip-waiting") self.skipWaiting();
  else if (type === "version") event.ports[0]?.postMessage({ version: VERSION });
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return; // map tiles: the network, or nothing
  if (request.mode === "navigate" && url.pathname.startsWith("/crew/")) {
    event.respondWith(navigation(request));
  } else if (CACHED.has(url.pathname) || url.pathname.startsWith("/vendor/leaflet/images/")) {
    event.respondWith(fromCache(request, url));
  }
  // /api, /sync and the rest: not ours, straight to the network
});

// The shell: this version's copy from the cache (so that the files it loads are the same
// version); the network only if the cache has lost it.
async function navigation(request) {
  const cached = await caches.match(SHELL, { cacheName: CACHE });
  if (cached) return cached;
  return fetch(request);
}

async function fromCache(request, url) {
  const cache = await caches.open(CACHE);
  const cached = await cache.match(url.pathname);
  if (cached) return cached;
  const response = await fetch(request);
  if (response.ok && url.pathname.startsWith("/vendor/leaflet/images/")) cache.put(url.pathname, response.clone());
  return response;
}

// -- push: "new job" notices for this crew ----------------------------------------------------

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { body: event.data ? event.data.text() : "" };
  }
  event.waitUntil(self.registration.showNotification(data.title || "Fieldwork", {
    body: data.body || "", tag: data.tag, lang: data.lang, data: { url: data.url || SHELL },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const target = new URL(event.notification.data?.url || SHELL, self.location.origin);
    const url = target.origin === self.location.origin && target.pathname.startsWith("/crew/") ? target.href : SHELL;
    const windows = await self.clients.matchAll({ type: "window" });
    const ours = windows.find((client) => new URL(client.url).pathname.startsWith("/crew/"));
    if (ours) {
      await ours.focus().catch(() => null);
      return ours.navigate(url).catch(() => null);
    }
    return self.clients.openWindow(url);
  })());
});
