// Small DOM helpers: elements are built with text nodes, never from HTML strings, so a job's
// params, messages or errors (user data) can never inject markup.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function percent(progress) {
  return `${Math.round(Math.max(0, Math.min(1, progress || 0)) * 100)} %`;
}

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const yearFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });

// Accepts what the API sends: an ISO string (REST) or epoch milliseconds (events). Today's
// times show the clock only; older ones their day too, in the reader's locale.
export function when(value, { clock = false } = {}) {
  if (value === null || value === undefined) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const now = new Date();
  if (clock || date.toDateString() === now.toDateString()) return clockFormat.format(date);
  const day = (date.getFullYear() === now.getFullYear() ? dayFormat : yearFormat).format(date);
  return `${day} ${clockFormat.format(date)}`;
}

export function stateBadge(state) {
  return h("span", { class: `state state-${state}` }, state);
}

export function progressBar(progress, label) {
  const bar = h("progress", { max: "100", value: String(Math.round((progress || 0) * 100)), "aria-label": label });
  return bar;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
