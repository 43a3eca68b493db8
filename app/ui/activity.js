// The activity panel: the live tail of the feed (jobtrail.js watchFeed), newest first,
// at most PANEL_MAX entries in the DOM. Each entry is also handed to the job list, which
// moves its rows and re-reads its first page from them instead of polling.

import { h, replace, stateBadge, when } from "./dom.js";
import { jobtrail, showStatus, watchOptions } from "./live.js";

const PANEL_MAX = 100;

export class ActivityPanel {
  constructor(api, { onEntry }) {
    this.api = api;
    this.onEntry = onEntry;
    this.list = document.getElementById("activity");
    this.empty = document.getElementById("activity-empty");
    this.status = document.getElementById("feed-status");
    this.feed = null;
  }

  async start() {
    try {
      const { watchFeed } = await jobtrail();
      this.feed = watchFeed({
        ...watchOptions(this.api),
        after: null,
        onEvent: (entry) => this.add(entry),
        onStatus: (status) => showStatus(this.status, status),
      });
    } catch (error) {
      showStatus(this.status, "unavailable");
      console.error("jobtrail.js could not be loaded", error);
    }
  }

  stop() {
    this.feed?.close();
    this.feed = null;
    replace(this.list);
  }

  add(entry) {
    this.empty.hidden = true;
    const link = h("a", { href: `#/jobs/${encodeURIComponent(entry.job_id)}` }, entry.job_id);
    this.list.prepend(h("li", { dataset: { entry: entry.id, job: entry.job_id } },
      h("time", { datetime: new Date(entry.at).toISOString() }, when(entry.at, { clock: true })),
      h("span", { class: "what" }, h("span", { class: "kind" }, entry.kind), " ", link),
      stateBadge(entry.state)));
    while (this.list.children.length > PANEL_MAX) this.list.lastElementChild.remove();
    this.onEntry(entry);
  }
}
