// The job list: one REST page at a time (GET /jobs, newest first, with a cursor), so the DOM
// holds at most PAGE_SIZE rows however many jobs there are. Bars of the unfinished jobs on
// the page move over one socket (jobtrail.js watchJobs, each resumed from the event the page
// was read at); the activity feed tells the list when to read its page again, never a timer.

import { ApiError } from "./api.js";
import { TERMINAL, h, percent, progressBar, replace, stateBadge, when } from "./dom.js";
import { jobtrail, showStatus, watchOptions } from "./live.js";

const PAGE_SIZE = 50;
const STATES = ["pending", "running", "succeeded", "failed", "cancelled"];
const REFRESH_MIN_MS = 1000; // a burst of feed entries reads the page once a second at most

export class JobList {
  constructor(api, mode, kinds) {
    this.api = api;
    this.mode = mode;
    this.kinds = kinds;
    this.filters = { state: "", kind: "", tenant: "" };
    this.search = "";
    this.cursors = [null]; // the cursor of each page visited: page n is read with cursors[n]
    this.pageIndex = 0;
    this.rows = new Map(); // job id -> {job, row, bar, text, state, phase}
    this.pending = new Map(); // job id -> patch, applied at the next animation frame
    this.tenants = new Set();
    this.watch = null;
    this.refreshTimer = null;
    this.lastRefresh = 0;
    this.loading = null;
  }

  mount(main) {
    this.main = main;
    replace(main, this.build());
    this.startWatch();
    return this.load();
  }

  unmount() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.watch?.close();
    this.watch = null;
    this.watched = null;
    this.main = null;
    this.rows.clear();
    this.pending.clear();
  }

  build() {
    const admin = this.mode !== "tenant";
    this.status = h("span", { class: "status", role: "status" });
    this.message = h("p", { class: "help", role: "status" });
    this.body = h("tbody");
    this.pager = h("nav", { class: "pager", "aria-label": "Pages of jobs" });
    const select = (name, label, options) => h("div", { class: "field" },
      h("label", { for: `filter-${name}` }, label),
      h("select", { id: `filter-${name}`, name, onchange: (event) => this.setFilter(name, event.target.value) },
        h("option", { value: "" }, "any"),
        options.map((value) => h("option", { value, selected: this.filters[name] === value }, value))),
    );
    this.tenantList = h("datalist", { id: "tenant-names" });
    return [
      h("div", { class: "view-head" },
        h("h1", { tabindex: "-1" }, "Jobs"),
        this.status),
      h("form", { class: "filters", role: "search", "aria-label": "Filter jobs", onsubmit: (event) => {
        event.preventDefault();
        this.lookUp();
      } },
        select("state", "State", STATES),
        select("kind", "Kind", this.kinds.map((kind) => kind.name)),
        admin ? h("div", { class: "field" },
          h("label", { for: "filter-tenant" }, "Tenant"),
          h("input", { id: "filter-tenant", name: "tenant", list: "tenant-names", value: this.filters.tenant,
            placeholder: "every tenant", autocomplete: "off",
            onchange: (event) => this.setFilter("tenant", event.target.value.trim()) }),
          this.tenantList) : null,
        h("div", { class: "field grow" },
          h("label", { for: "filter-search" }, "Search by id or kind"),
          h("input", { id: "filter-search", type: "search", name: "q", value: this.search, autocomplete: "off",
            placeholder: "job id, or part of a kind", "aria-describedby": "filter-search-help",
            oninput: (event) => { this.search = event.target.value.trim(); this.applySearch(); } }),
          h("span", { id: "filter-search-help", class: "sr-only" }, "Filters this page as you type; Enter opens a job by its id")),
        // A form of several fields submits on Enter only with a submit button.
        h("button", { type: "submit", class: "quiet" }, "Find"),
      ),
      this.message,
      h("div", { class: "table-wrap" },
        h("table", { class: "jobs", "aria-label": "Jobs, newest first" },
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "Job"),
            h("th", { scope: "col" }, "Kind"),
            admin ? h("th", { scope: "col" }, "Tenant") : null,
            h("th", { scope: "col", class: "state-col" }, "State"),
            h("th", { scope: "col", class: "progress-col" }, "Progress"),
            h("th", { scope: "col", class: "created-col" }, "Created"))),
          this.body)),
      this.pager,
    ];
  }

  setFilter(name, value) {
    this.filters[name] = value;
    this.cursors = [null];
    this.pageIndex = 0;
    this.load();
  }

  async load() {
    const token = Symbol("load");
    this.loading = token;
    this.lastRefresh = Date.now();
    // Until this page is read, the next one's cursor is unknown: no paging meanwhile.
    for (const button of this.pager.querySelectorAll("button")) button.disabled = true;
    let page;
    try {
      page = await this.api.listJobs({ ...this.filters, limit: PAGE_SIZE, cursor: this.cursors[this.pageIndex] });
    } catch (error) {
      if (this.loading === token) {
        replace(this.message, `Could not list jobs: ${error.message}`);
        this.renderPager(this.cursors[this.pageIndex + 1]);
      }
      return;
    }
    if (this.loading !== token || !this.main) return; // a newer load or another view won
    this.cursors[this.pageIndex + 1] = page.next;
    this.render(page.jobs);
    this.renderPager(page.next);
    this.syncWatch();
  }

  render(jobs) {
    const admin = this.mode !== "tenant";
    this.rows.clear();
    replace(this.message, jobs.length ? "" : "No jobs match. Submit one with the form.");
    replace(this.body, jobs.map((job) => {
      if (job.tenant) this.tenants.add(job.tenant);
      const link = h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id);
      const bar = progressBar(job.progress, `Progress of job ${job.id}`);
      const text = h("span", { class: "pct" }, percent(job.progress));
      const state = h("td", { class: "state-cell" }, stateBadge(job.state));
      const phase = h("span", { class: "phase" }, job.message || job.phase || "");
      const row = h("tr", { dataset: { job: job.id }, onclick: (event) => {
        if (event.target.closest("a")) return;
        location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
      } },
        h("td", { class: "id-cell" }, link),
        h("td", { "data-label": "Kind" }, job.kind),
        admin ? h("td", { "data-label": "Tenant" }, job.tenant ?? "—") : null,
        state,
        h("td", { class: "progress-cell" }, h("div", { class: "bar-line" }, bar, text), phase),
        h("td", { "data-label": "Created" }, when(job.created_at)));
      this.rows.set(job.id, { job: { ...job }, row, bar, text, state, phase });
      return row;
    }));
    if (this.tenantList) {
      replace(this.tenantList, [...this.tenants].sort().map((name) => h("option", { value: name })));
    }
    this.applySearch();
  }

  renderPager(next) {
    const newer = h("button", { type: "button", class: "quiet", disabled: this.pageIndex === 0,
      onclick: () => { this.pageIndex -= 1; this.load(); } }, "← Newer");
    const older = h("button", { type: "button", class: "quiet", disabled: !next,
      onclick: () => { this.pageIndex += 1; this.load(); } }, "Older →");
    replace(this.pager, newer, h("span", { class: "page-no" }, `Page ${this.pageIndex + 1}`), older);
  }

  applySearch() {
    const needle = this.search.toLowerCase();
    for (const { job, row } of this.rows.values()) {
      row.hidden = Boolean(needle) && !job.id.toLowerCase().includes(needle) && !job.kind.toLowerCase().includes(needle);
    }
  }

  // Enter in the search box: an exact id opens that job; else a kind matching the text
  // becomes the kind filter.
  async lookUp() {
    const text = this.search;
    if (!text) return;
    try {
      const job = await this.api.job(text);
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
      return;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        replace(this.message, `Search failed: ${error.message}`);
        return;
      }
    }
    const kind = this.kinds.find((k) => k.name === text) || this.kinds.find((k) => k.name.includes(text));
    if (kind) {
      this.main.querySelector("#filter-kind").value = kind.name;
      this.search = "";
      this.main.querySelector("#filter-search").value = "";
      this.setFilter("kind", kind.name);
    } else {
      replace(this.message, `No job has the id “${text}” and no kind matches it.`);
    }
  }

  async startWatch() {
    try {
      const { watchJobs, foldEvent } = await jobtrail();
      if (!this.main || this.watch) return;
      // Each row's state is folded on from what the page read (jobtrail.js's own fold):
      // a watch resumed mid-job has no earlier events to fold from.
      this.watch = watchJobs([], {
        ...watchOptions(this.api),
        onEvent: (event) => {
          const entry = this.rows.get(event.job);
          if (entry) this.patch(event.job, foldEvent({ ...entry.job, ...this.pending.get(event.job) }, event));
        },
        onStatus: (status) => showStatus(this.status, status),
        // A listed job deleted (or gone) under the page: read the page again without it.
        onEnd: (reason) => { if (reason !== "terminal") this.scheduleRefresh(); },
      });
      this.syncWatch();
    } catch (error) {
      showStatus(this.status, "unavailable");
      console.error("jobtrail.js could not be loaded", error);
    }
  }

  // Watch exactly the unfinished jobs on the page, each from the event the page showed.
  syncWatch() {
    if (!this.watch) return;
    this.watched ??= new Set();
    for (const id of [...this.watched]) {
      const entry = this.rows.get(id);
      if (!entry || TERMINAL.has(entry.job.state)) {
        this.watch.remove(id);
        this.watched.delete(id);
      }
    }
    for (const [id, { job }] of this.rows) {
      if (!TERMINAL.has(job.state) && !this.watched.has(id)) {
        this.watch.add(id, { after: job.last_event_id || null });
        this.watched.add(id);
      }
    }
    // Nothing to follow, nothing to report: a socket with no subscription is never "live".
    this.status.hidden = this.watched.size === 0;
  }

  patch(id, change) {
    if (!this.rows.has(id)) return;
    const merged = { ...this.pending.get(id) };
    for (const name of ["state", "progress", "phase", "message"]) {
      if (change[name] !== undefined) merged[name] = change[name];
    }
    this.pending.set(id, merged);
    if (this.pending.size === 1) requestAnimationFrame(() => this.flush());
  }

  // One DOM write per row per frame, however many events arrived: 50 running jobs stay cheap.
  flush() {
    for (const [id, change] of this.pending) {
      const entry = this.rows.get(id);
      if (!entry) continue;
      const before = entry.job.state;
      Object.assign(entry.job, change);
      if (change.progress !== undefined) {
        entry.bar.value = Math.round(change.progress * 100);
        entry.text.textContent = percent(change.progress);
      }
      if (change.state && change.state !== before) replace(entry.state, stateBadge(change.state));
      if (change.message !== undefined || change.phase !== undefined) {
        entry.phase.textContent = entry.job.message || entry.job.phase || "";
      }
      if (change.state && change.state !== before && this.filters.state && change.state !== this.filters.state) {
        this.scheduleRefresh(); // it no longer belongs on this filtered page
      }
    }
    this.pending.clear();
    this.syncWatch();
  }

  // An activity-feed entry: move a listed job's state, or read the first page again when a
  // new job may belong on it.
  onFeedEntry(entry) {
    if (!this.main) return;
    if (entry.tenant) this.tenants.add(entry.tenant);
    if (this.rows.has(entry.job_id)) {
      this.patch(entry.job_id, { state: entry.state });
    } else if (entry.type === "submitted" && this.pageIndex === 0 && this.matches(entry)) {
      this.scheduleRefresh();
    } else if (this.filters.state && entry.state === this.filters.state && this.pageIndex === 0) {
      this.scheduleRefresh(); // a job entered the state this page lists
    }
  }

  matches(entry) {
    return (!this.filters.kind || entry.kind === this.filters.kind)
      && (!this.filters.state || entry.state === this.filters.state)
      && (!this.filters.tenant || entry.tenant === this.filters.tenant);
  }

  scheduleRefresh() {
    if (this.refreshTimer) return;
    const wait = Math.max(0, this.lastRefresh + REFRESH_MIN_MS - Date.now());
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      if (this.main) this.load();
    }, wait);
  }
}
