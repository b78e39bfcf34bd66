// Small DOM helpers shared by the views. Text always goes in as textContent.

import { i18n } from "/lib/i18n.js";

export { i18n };
export const t = (key, params) => i18n.t(key, params);
export const $ = (id) => document.getElementById(id);

/** h("p", {class: "x", dataset: {id: 1}}, "text", child…) */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/**
 * Put `children` (elements) in `container`, keeping every child whose markup did not change
 * as the element already there. A sync redraws the screen; a finger on a button or a row at
 * that moment must still make a tap, and a replaced element loses the click.
 */
export function redraw(container, children) {
  const kept = new Map();
  for (const old of container.children) {
    const same = kept.get(old.outerHTML) || [];
    same.push(old);
    kept.set(old.outerHTML, same);
  }
  const next = children.map((fresh) => kept.get(fresh.outerHTML)?.shift() || fresh);
  next.forEach((node, index) => {
    if (container.children[index] !== node) container.insertBefore(node, container.children[index] || null);
  });
  while (container.children.length > next.length) container.lastElementChild.remove();
}

/** A value inside translated text kept in its own direction (numbers, addresses). */
export const isolate = (value) => `\u2068${value}\u2069`;

export function time(value) {
  return i18n.date(value, { hour: "2-digit", minute: "2-digit" });
}

export function dateTime(value) {
  return i18n.date(value, { dateStyle: "medium", timeStyle: "short" });
}

/** "in 2 h" / "3 h ago", rounded to the largest sensible unit. */
export function relative(value, now = Date.now()) {
  const minutes = Math.round((Date.parse(value) - now) / 60_000);
  if (Math.abs(minutes) < 60) return i18n.relativeTime(minutes, "minute");
  const hours = Math.round(minutes / 60);
  if (Math.abs(hours) < 48) return i18n.relativeTime(hours, "hour");
  return i18n.relativeTime(Math.round(hours / 24), "day");
}

export function metres(value) {
  if (value === null || value === undefined) return "";
  return value < 1000
    ? t("distance.m", { n: i18n.number(Math.round(value / 10) * 10) })
    : t("distance.km", { n: i18n.number(value / 1000, { maximumFractionDigits: 1 }) });
}

/** A status's words: the catalogue's, else the server's label. */
export function statusLabel(code, fallback) {
  const key = `status.${code}`;
  return i18n.has(key) ? t(key) : fallback || code;
}

/** A code's words (resolution, reason): the catalogue's, else the server's label. */
export function choiceLabel(group, choice) {
  const key = `${group}.${choice.code}`;
  return i18n.has(key) ? t(key) : choice.label;
}
