// Message catalogues for every app (crew, dispatch, resident): no text lives in code.
//
// A catalogue is /locales/<app>/<lang>.json: flat keys to strings with {name} placeholders.
// A plural entry is an object keyed by Intl.PluralRules categories
// ({"one": "{count} edit", "other": "{count} edits"}), chosen by the `count` parameter.
// A key missing in a language falls back to English, then to the key itself.
//
// Markup is translated by attributes:
//   <h1 data-i18n="title"></h1>                          textContent
//   <input data-i18n-attr="placeholder:search.hint;aria-label:search.label">
//
// Usage:
//   import { i18n } from "/lib/i18n.js";
//   await i18n.init("crew");            // picks the language, loads it, translates the page
//   i18n.t("jobs.count", { count: 3 });
//   await i18n.setLanguage("ar");       // remembered, page re-translated, dir="rtl"

export const LANGUAGES = Object.freeze([
  { code: "en", name: "English" },
  { code: "es", name: "Español" },
  { code: "zh-Hans", name: "简体中文" },
  { code: "ru", name: "Русский" },
  { code: "bn", name: "বাংলা" },
  { code: "ht", name: "Kreyòl ayisyen" },
  { code: "ko", name: "한국어" },
  { code: "ar", name: "العربية", dir: "rtl" },
  { code: "fr", name: "Français" },
]);

const FALLBACK = "en";
const STORAGE_KEY = "fieldwork.language";

// Browser tags that name one of our languages by another spelling.
const ALIASES = { zh: "zh-Hans", "zh-cn": "zh-Hans", "zh-sg": "zh-Hans", "zh-hans": "zh-Hans" };

/** The best of `supported` for a list of BCP 47 tags (the browser's, most preferred first). */
export function matchLanguage(tags, supported) {
  const codes = new Map(supported.map((code) => [code.toLowerCase(), code]));
  for (const raw of tags || []) {
    const tag = String(raw).toLowerCase();
    const alias = ALIASES[tag];
    if (alias && codes.has(alias.toLowerCase())) return codes.get(alias.toLowerCase());
    if (codes.has(tag)) return codes.get(tag);
    const base = tag.split("-")[0];
    const baseAlias = ALIASES[base];
    if (baseAlias && codes.has(baseAlias.toLowerCase())) return codes.get(baseAlias.toLowerCase());
    if (codes.has(base)) return codes.get(base);
  }
  return supported.includes(FALLBACK) ? FALLBACK : supported[0];
}

function interpolate(text, params) {
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

export class Translator {
  constructor() {
    this.app = null;
    this.language = FALLBACK;
    this.supported = LANGUAGES.map((l) => l.code);
    this.messages = {};
    this.fallback = {};
    this.listeners = new Set();
  }

  /** Load the app's catalogue in the remembered or browser language and translate the page. */
  async init(app, { supported, root = document } = {}) {
    this.app = app;
    if (supported) this.supported = supported;
    this.fallback = await this.#load(FALLBACK);
    let stored = null;
    try {
      stored = localStorage.getItem(STORAGE_KEY);
    } catch {
      // storage can be off (private mode): the browser's languages still choose
    }
    const wanted = stored && this.supported.includes(stored) ? stored : matchLanguage(navigator.languages, this.supported);
    await this.setLanguage(wanted, { remember: false, root });
    return this;
  }

  async setLanguage(code, { remember = true, root = document } = {}) {
    const language = this.supported.includes(code) ? code : FALLBACK;
    this.messages = language === FALLBACK ? this.fallback : await this.#load(language);
    this.language = language;
    if (remember) {
      try {
        localStorage.setItem(STORAGE_KEY, language);
      } catch {
        // not remembered; still applied
      }
    }
    document.documentElement.lang = language;
    document.documentElement.dir = this.dir;
    this.translate(root);
    for (const listener of this.listeners) listener(language);
  }

  get dir() {
    return LANGUAGES.find((l) => l.code === this.language)?.dir || "ltr";
  }

  /** Call `listener(language)` after every language change (to re-render dynamic views). */
  onChange(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  has(key) {
    return key in this.messages || key in this.fallback;
  }

  t(key, params = {}) {
    let entry = this.messages[key] ?? this.fallback[key];
    if (entry === undefined) return key;
    if (typeof entry === "object") {
      const count = Number(params.count ?? 0);
      const category = new Intl.PluralRules(this.language).select(count);
      entry = entry[category] ?? entry.other ?? Object.values(entry)[0];
    }
    return interpolate(String(entry), params);
  }

  /** Apply data-i18n and data-i18n-attr under `root`. */
  translate(root = document) {
    for (const node of root.querySelectorAll("[data-i18n]")) {
      node.textContent = this.t(node.dataset.i18n);
    }
    for (const node of root.querySelectorAll("[data-i18n-attr]")) {
      for (const pair of node.dataset.i18nAttr.split(";")) {
        const [attribute, key] = pair.split(":").map((s) => s.trim());
        if (attribute && key) node.setAttribute(attribute, this.t(key));
      }
    }
  }

  date(value, options = { dateStyle: "medium", timeStyle: "short" }) {
    return new Intl.DateTimeFormat(this.language, options).format(new Date(value));
  }

  number(value, options = {}) {
    return new Intl.NumberFormat(this.language, options).format(value);
  }

  relativeTime(value, unit) {
    return new Intl.RelativeTimeFormat(this.language, { numeric: "auto" }).format(value, unit);
  }

  async #load(language) {
    const response = await fetch(`/locales/${this.app}/${language}.json`);
    if (!response.ok) {
      if (language === FALLBACK) throw new Error(`no ${FALLBACK} catalogue for ${this.app}`);
      return {};
    }
    return response.json();
  }
}

/** The page's one translator. */
export const i18n = new Translator();
