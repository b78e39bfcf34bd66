// What both resident pages share: the language (catalogue, switch, ?lang=), the service
// worker, and talking to the server. No text lives here: every word comes from
// /locales/resident/<lang>.json through /lib/i18n.js.
import { LANGUAGES, i18n } from "/lib/i18n.js";

export { i18n };

/** Load the catalogue (remembered choice, ?lang= from a notice, or the browser's), wire the switch. */
export async function startPage() {
  await i18n.init("resident");
  const wanted = new URLSearchParams(location.search).get("lang");
  if (wanted && i18n.supported.includes(wanted) && wanted !== i18n.language) {
    await i18n.setLanguage(wanted);
  }
  const select = document.getElementById("language");
  for (const { code, name } of LANGUAGES) {
    const option = document.createElement("option");
    option.value = code;
    option.lang = code;
    option.textContent = name;
    select.append(option);
  }
  select.value = i18n.language;
  select.addEventListener("change", () => i18n.setLanguage(select.value));
  const setTitle = () => { document.title = i18n.t(document.body.dataset.titleKey); };
  setTitle();
  i18n.onChange((language) => {
    select.value = language;
    setTitle();
  });
  registerServiceWorker();
}

export function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return null;
  return navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => null);
}

export class NetworkError extends Error {}

/** fetch JSON: {ok, status, data}; NetworkError when the server cannot be reached. */
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", ...options });
  } catch (error) {
    throw new NetworkError(String(error));
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  return { ok: response.ok, status: response.status, data, headers: response.headers };
}

export function postJSON(path, body, method = "POST") {
  return api(path, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

/** A message for a failed call, in the page's language. */
export function failureText(error, result) {
  if (error instanceof NetworkError) return i18n.t("error.network");
  if (result && result.status === 429) return i18n.t("error.rate");
  return i18n.t("error.server");
}

export function show(element, visible = true) {
  element.hidden = !visible;
  return element;
}

/** A value set inside translated text kept in its own direction (a number like
 * "1-1523590121" or an English address in an Arabic sentence): Unicode isolates. */
export function isolate(value) {
  return `\u2068${value}\u2069`;
}

/** A date and time in the page's language (Intl), e.g. "7 dic 2026, 14:05". */
export function when(value, options) {
  return i18n.date(value, options);
}

// The reports made on this device, so that a lost link is not a lost report.
const MINE_KEY = "fieldwork.resident.reports";

export function rememberReport(report) {
  try {
    const mine = JSON.parse(localStorage.getItem(MINE_KEY) || "[]").filter((r) => r.token !== report.token);
    mine.unshift(report);
    localStorage.setItem(MINE_KEY, JSON.stringify(mine.slice(0, 20)));
  } catch {
    // storage off: the page still shows the link
  }
}

export function myReports() {
  try {
    return JSON.parse(localStorage.getItem(MINE_KEY) || "[]");
  } catch {
    return [];
  }
}
