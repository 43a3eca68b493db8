// The live side of the page: jobtrail.js (the browser client, one WebSocket for many jobs,
// EventSource as fallback), loaded on first use so the REST views work even if it cannot be.

import { h, replace } from "./dom.js";

let client = null;

export function jobtrail() {
  client ??= import("./jobtrail.js");
  return client;
}

// The options every watch shares: where, and how to get a token for a socket.
export function watchOptions(api) {
  return api.key ? { getToken: (scope) => api.token(scope) } : {};
}

const STATUS_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  closed: "closed",
  unavailable: "live updates unavailable",
  finished: "finished: every event received",
  deleted: "the job was deleted",
  "not found": "no such job",
};

// A badge saying whether a live view is connected, for sighted users and screen readers alike.
export function showStatus(node, status) {
  node.dataset.status = status;
  replace(node, h("span", { class: "dot", "aria-hidden": "true" }), STATUS_TEXT[status] || status);
}
