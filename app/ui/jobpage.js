// A job's page (#/jobs/<id>): its state as GET /jobs/{id} reads it, then every event of its
// history replayed and followed live by jobtrail.js (watchJob from the beginning), so the
// timeline grows as the job runs and survives reconnects without a lost or repeated entry.

import { ApiError } from "./api.js";
import { TERMINAL, h, percent, progressBar, replace, stateBadge, when } from "./dom.js";
import { jobtrail, showStatus, watchOptions } from "./live.js";

const TIMELINE_MAX = 2000; // entries kept in the DOM; the oldest go first (history has them all)

export class JobPage {
  constructor(api, mode, id, { confirm }) {
    this.api = api;
    this.mode = mode;
    this.id = id;
    this.confirm = confirm;
    this.job = null;
    this.watch = null;
    this.seen = 0;
    this.dropped = 0;
    this.ended = null;
  }

  async mount(main) {
    this.main = main;
    this.status = h("span", { class: "status", role: "status" });
    this.title = h("h1", { tabindex: "-1" }, "Job ", h("code", {}, this.id));
    replace(main, h("p", { class: "back" }, h("a", { href: "#/" }, "← All jobs")), h("div", { class: "view-head" }, this.title, this.status));
    try {
      this.job = await this.api.job(this.id, { downloadToken: true });
    } catch (error) {
      if (!this.main) return;
      const text = error instanceof ApiError && error.status === 404
        ? "No such job: it never existed, has expired, was deleted, or belongs to another tenant."
        : `Could not read the job: ${error.message}`;
      main.append(h("p", { class: "error", role: "alert" }, text));
      return;
    }
    if (!this.main) return;
    main.append(...this.build());
    this.show();
    this.follow();
  }

  unmount() {
    this.main = null;
    this.watch?.close();
    this.watch = null;
  }

  build() {
    this.fields = {};
    const row = (name, label) => [h("dt", {}, label), (this.fields[name] = h("dd", { "data-field": name }))];
    this.bar = progressBar(0, "Progress of the job");
    this.pct = h("span", { class: "pct" });
    this.actionError = h("p", { class: "error", role: "alert" });
    this.actions = h("div", { class: "actions" });
    this.outcome = h("section", { class: "outcome", "aria-live": "polite" });
    this.timeline = h("ol", { class: "timeline", "aria-label": "Events of the job, oldest first" });
    this.timelineNote = h("p", { class: "help" });
    this.count = h("span", { class: "count" });
    return [
      h("div", { class: "card job-card" },
        h("div", { class: "bar-line big" }, this.bar, this.pct),
        h("dl", { class: "facts" },
          row("kind", "Kind"), row("state", "State"), row("phase", "Phase"), row("message", "Message"),
          row("attempt", "Attempt"), this.mode !== "tenant" ? row("tenant", "Tenant") : null,
          row("created_at", "Created"), row("started_at", "Started"), row("finished_at", "Finished")),
        this.actions, this.actionError),
      this.outcome,
      h("details", { class: "card params" }, h("summary", {}, "Params"), h("pre", {}, JSON.stringify(this.job.params, null, 2))),
      h("section", { class: "card", "aria-labelledby": "timeline-title" },
        h("div", { class: "card-head" }, h("h2", { id: "timeline-title" }, "Timeline"), this.count),
        this.timelineNote, this.timeline),
    ];
  }

  show() {
    const job = this.job;
    this.bar.value = Math.round((job.progress || 0) * 100);
    replace(this.pct, percent(job.progress));
    replace(this.fields.kind, job.kind);
    replace(this.fields.state, stateBadge(job.state), job.cancel_requested && !TERMINAL.has(job.state) ? " (cancel requested)" : "");
    replace(this.fields.phase, job.phase || "—");
    replace(this.fields.message, job.message || "—");
    replace(this.fields.attempt, `${job.attempt || 0} of ${job.max_attempts}`);
    if (this.fields.tenant) replace(this.fields.tenant, job.tenant ?? "— (no tenant)");
    for (const name of ["created_at", "started_at", "finished_at"]) replace(this.fields[name], when(job[name]) || "—");
    this.showActions();
    this.showOutcome();
  }

  // Rebuilt only when what they offer changes: a button replaced under the keyboard's
  // focus at every progress event would throw the focus away.
  showActions() {
    const job = this.job;
    const gone = this.ended === "deleted";
    const offer = JSON.stringify([TERMINAL.has(job.state), job.cancel_requested, job.artifact?.download_url, gone]);
    if (offer === this.offer) return;
    this.offer = offer;
    const buttons = [];
    if (!TERMINAL.has(job.state) && !gone) {
      buttons.push(h("button", { type: "button", class: "danger", disabled: job.cancel_requested, onclick: () => this.cancel() },
        job.cancel_requested ? "Cancel requested" : "Cancel job"));
    }
    if (!gone) buttons.push(h("button", { type: "button", class: "quiet", onclick: () => this.remove() }, "Delete job"));
    if (job.artifact && !gone) {
      buttons.push(h("a", { class: "button", href: job.artifact.download_url, download: job.artifact.name,
        onclick: (event) => this.download(event) }, `Download ${job.artifact.name}`));
    }
    if (!gone) buttons.push(h("button", { type: "button", class: "quiet", onclick: () => this.audit() }, "Audit PDF"));
    const hadFocus = this.actions.contains(document.activeElement);
    replace(this.actions, buttons);
    if (hadFocus) this.actions.querySelector("button:not([disabled]), a")?.focus();
  }

  showOutcome() {
    const job = this.job;
    if (this.ended === "deleted") {
      replace(this.outcome, h("p", { class: "card notice" }, "This job was deleted."));
    } else if (job.state === "succeeded") {
      replace(this.outcome, h("div", { class: "card result" }, h("h2", {}, "Result"), h("pre", {}, JSON.stringify(job.result, null, 2))));
    } else if (job.error) {
      replace(this.outcome, h("div", { class: "card failure" }, h("h2", {}, job.state === "cancelled" ? "Cancelled" : "Error"),
        h("p", {}, h("strong", {}, job.error.type || "error"), ": ", job.error.message || "")));
    } else if (job.state === "cancelled") {
      replace(this.outcome, h("div", { class: "card failure" }, h("h2", {}, "Cancelled")));
    } else {
      replace(this.outcome);
    }
  }

  async follow() {
    let client;
    try {
      client = await jobtrail();
    } catch (error) {
      showStatus(this.status, "unavailable");
      console.error("jobtrail.js could not be loaded", error);
      return;
    }
    if (!this.main) return;
    this.watch = client.watchJob(this.id, {
      ...watchOptions(this.api),
      after: null,
      onEvent: (event) => this.addEvent(event),
      onState: (summary) => this.onState(summary),
      onGap: (gap) => this.onGap(gap),
      onEnd: (reason) => this.onEnd(reason),
      // After the end, the watch's "closed" would hide why it ended.
      onStatus: (status) => { if (!this.ended) showStatus(this.status, status); },
    });
  }

  // Many events can arrive in one frame (a replay, a burst): the page is drawn once per frame.
  scheduleShow() {
    if (this.showPending) return;
    this.showPending = true;
    requestAnimationFrame(() => {
      this.showPending = false;
      if (this.main) this.show();
    });
  }

  onState(summary) {
    if (!this.main) return;
    // The summary is folded from the whole history (the watch starts at the beginning).
    for (const name of ["state", "progress", "phase", "message", "attempt", "result", "error"]) {
      if (summary[name] !== undefined) this.job[name] = summary[name];
    }
    this.job.cancel_requested = summary.cancelRequested;
    this.scheduleShow();
  }

  onGap(gap) {
    if (gap.state) Object.assign(this.job, gap.state);
    this.timeline.append(h("li", { class: "gap" }, "Earlier events were trimmed from the job's history."));
    this.show();
  }

  async onEnd(reason) {
    this.ended = reason;
    if (!this.main) return;
    showStatus(this.status, reason === "terminal" ? "finished" : reason);
    if (reason === "terminal") {
      // Timestamps, the artifact and its download link are the server's: read them once more.
      try {
        this.job = await this.api.job(this.id, { downloadToken: true });
      } catch (error) {
        replace(this.actionError, `Could not read the finished job: ${error.message}`);
      }
    }
    if (this.main) this.show();
  }

  addEvent(event) {
    if (!this.main) return;
    this.seen += 1;
    replace(this.count, `${this.seen} event${this.seen === 1 ? "" : "s"}`);
    // The page may have been read before these; the events carry the times.
    if (event.type === "started") this.job.started_at = event.at;
    if (TERMINAL.has(event.type)) this.job.finished_at = event.at;
    const list = this.timeline;
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    this.timeline.append(h("li", { dataset: { eventId: event.id, type: event.type } },
      h("time", { datetime: new Date(event.at).toISOString() }, when(event.at, { clock: true })),
      h("span", { class: `type type-${event.type}` }, event.type),
      h("span", { class: "what" }, describe(event)),
      event.attempt ? h("span", { class: "attempt" }, `attempt ${event.attempt}`) : null));
    while (this.timeline.children.length > TIMELINE_MAX) {
      this.timeline.firstElementChild.remove();
      this.dropped += 1;
    }
    if (atBottom) list.scrollTop = list.scrollHeight; // follow the tail unless the reader scrolled up
    replace(this.timelineNote, this.dropped ? `${this.dropped} earlier events are not shown (GET /jobs/${this.id}/history has them all).` : "");
  }

  async cancel() {
    if (!(await this.confirm(`Cancel job ${this.id}?`,
      "A pending job is cancelled at once; a running one stops at its next progress report.", "Cancel job"))) return;
    await this.act(async () => { this.job = { ...this.job, ...(await this.api.cancel(this.id)) }; });
  }

  async remove() {
    if (!(await this.confirm(`Delete job ${this.id}?`,
      "Its events, its state and its artifact are removed for good.", "Delete job"))) return;
    await this.act(async () => {
      await this.api.remove(this.id);
      location.hash = "#/";
    });
  }

  async download(event) {
    event.preventDefault();
    // A fresh token: the one in the page may have expired while the page stayed open.
    await this.act(async () => {
      const job = await this.api.job(this.id, { downloadToken: true });
      if (!job.artifact) throw new Error("the job has no artifact");
      h("a", { href: job.artifact.download_url, download: job.artifact.name }).click();
    });
  }

  async audit() {
    await this.act(async () => {
      const url = await this.api.auditUrl(this.id);
      h("a", { href: url, target: "_blank", rel: "noopener" }).click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    });
  }

  async act(step) {
    replace(this.actionError);
    try {
      await step();
    } catch (error) {
      replace(this.actionError, error.message);
    }
    if (this.main) this.show();
  }
}

function describe(event) {
  const data = event.data || {};
  switch (event.type) {
    case "submitted": return `${data.kind}${data.tenant ? ` for ${data.tenant}` : ""}`;
    case "started": return data.worker ? `on ${data.worker}` : "";
    case "progress": return [percent(data.progress), data.phase, data.message].filter(Boolean).join(" · ");
    case "phase": return [data.phase, data.message].filter(Boolean).join(" · ");
    case "log": return `${data.level || "info"}: ${data.message || ""}`;
    case "retrying": return `${errorText(data.error)}; next attempt in ${data.delay_s} s`;
    case "failed": return errorText(data.error);
    case "succeeded": return data.artifact ? `artifact ${data.artifact.name}` : "";
    case "cancelled":
    case "cancel_requested": return data.reason || "";
    default: return "";
  }
}

function errorText(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  return `${error.type || "error"}: ${error.message || ""}`;
}
