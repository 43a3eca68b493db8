// jobtrail.js: follow jobtrail jobs (and the activity feed) live from a browser page.
//
//   import {watchJob, watchJobs, watchFeed} from "/ui/jobtrail.js";
//
// Over one WebSocket (/ws) per watch, or over EventSource (one stream per job) where /ws
// is not available. Either way the page sees every event exactly once, in order, across
// anything that closes a connection: an API restart, a Redis outage, an expired token.
// How, in short:
// - each subscription keeps its own cursor (the last event id delivered) and resumes from
//   it (`after`), and drops anything at or before it, so a replayed event is never
//   delivered twice;
// - any close, error or refused answer schedules a reconnect with capped exponential
//   backoff and jitter; only a final answer (terminal, deleted, not found) stops it;
// - a browser EventSource gives up for good on any non-200 answer and never says which
//   status it met (WHATWG HTML, server-sent events), so this module never lets it retry on
//   its own: it closes it at the first error, asks the same URL with fetch() for the status
//   when the stream never opened, and opens a new one with `after=<cursor>`, with a fresh
//   token if the old one was refused;
// - on /ws a token that expires ends the socket with close code 4401; a fresh token is
//   asked for and every unfinished subscription is sent again with its cursor.
// No dependencies, no build step: this file is served as it is at /ui/jobtrail.js.

const JOB_EVENT_TYPES = [
  "submitted", "started", "progress", "phase", "log", "cancel_requested", "retrying",
  "succeeded", "failed", "cancelled",
];
const TERMINAL_TYPES = new Set(["succeeded", "failed", "cancelled"]);
// Reasons after which a subscription is over for good: no reconnect can change them.
const FINAL_REASONS = new Set(["terminal", "deleted", "not found", "bad request", "not authenticated", "not covered"]);
// /ws error codes that name a job and that no retry can change: the watch's own fault.
const FINAL_ERRORS = new Map([["bad_message", "bad request"], ["not_covered", "not covered"]]);
const OPEN = 1; // OPEN, spelled out: the page may have wrapped WebSocket
const TOKEN_REFUSED = 4401; // the close code /ws uses for missing, bad or expired credentials
// In "auto", a WebSocket that fails this many times in a row without ever opening, while
// no socket of this watch ever opened, means the server (or a proxy) does not speak /ws.
const WS_FAILURES_BEFORE_FALLBACK = 2;

const DEFAULTS = {
  transport: "auto",
  minDelayMs: 250,
  maxDelayMs: 10000,
  pingMs: 15000, // how often an idle socket is pinged; silent for 3 of these, it is dropped
};

/** Compare two stream ids ("<ms>-<seq>" or "<ms>"): negative, 0 or positive. */
export function compareIds(a, b) {
  const [am, as = "0"] = String(a).split("-");
  const [bm, bs = "0"] = String(b).split("-");
  // BigInt: milliseconds fit a double, but a sequence number may not.
  const ms = BigInt(am) - BigInt(bm);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const seq = BigInt(as) - BigInt(bs);
  return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}

/** The delay before reconnect attempt `attempt` (0, 1, …): doubling, capped, with jitter. */
export function backoffDelay(attempt, minMs = DEFAULTS.minDelayMs, maxMs = DEFAULTS.maxDelayMs) {
  const capped = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  // "Equal jitter": never less than half the delay, so a crowd spreads out but still waits.
  return capped / 2 + Math.random() * (capped / 2);
}

function call(callback, ...args) {
  if (typeof callback !== "function") return;
  try {
    callback(...args);
  } catch (error) {
    // A page's callback that throws must not break the connection or lose the next event.
    setTimeout(() => { throw error; });
  }
}

// --- what a page sees of one job: the events, folded into a summary ---

function emptySummary(job) {
  return {
    job, kind: null, state: null, progress: 0, percent: 0, phase: null, message: null, attempt: 0,
    cancelRequested: false, lastEventId: null, result: null, error: null, artifact: null,
  };
}

function summaryFromState(state) {
  return {
    job: state.id, kind: state.kind ?? null, state: state.state, progress: state.progress ?? 0,
    percent: Math.round((state.progress ?? 0) * 100), phase: state.phase ?? null,
    message: state.message ?? null, attempt: state.attempt ?? 0,
    cancelRequested: Boolean(state.cancel_requested), lastEventId: state.last_event_id ?? null,
    result: state.result ?? null, error: state.error ?? null, artifact: state.artifact ?? null,
  };
}

/** The summary after `event`: the same fold as the server's state hash (app/reducer.py). */
export function foldEvent(summary, event) {
  const data = event.data || {};
  const next = { ...summary, lastEventId: event.id, attempt: event.attempt ?? summary.attempt };
  switch (event.type) {
    case "submitted":
      Object.assign(next, { kind: data.kind ?? null, state: "pending", progress: 0, cancelRequested: false });
      break;
    case "started":
      Object.assign(next, { state: "running", progress: 0, phase: null, message: null });
      break;
    case "progress":
    case "phase":
      if (data.phase != null) next.phase = data.phase;
      if (data.message != null) next.message = data.message;
      if (data.progress != null) next.progress = data.progress;
      break;
    case "cancel_requested":
      next.cancelRequested = true;
      break;
    case "retrying":
      Object.assign(next, { state: "pending", error: data.error ?? null });
      break;
    case "succeeded":
      Object.assign(next, { state: "succeeded", progress: 1, result: data.result ?? null, artifact: data.artifact ?? null });
      break;
    case "failed":
      Object.assign(next, { state: "failed", error: data.error ?? null });
      break;
    case "cancelled":
      next.state = "cancelled";
      break;
    default:
      break;
  }
  next.percent = Math.round(next.progress * 100);
  return next;
}

// --- subscriptions: one job, or the feed; each owns its cursor and its callbacks ---

class JobSubscription {
  constructor(job, after, callbacks) {
    this.job = job;
    this.key = `job:${job}`;
    this.cursor = after ?? null;
    this.callbacks = callbacks;
    this.summary = emptySummary(job);
    this.foldFloor = null; // after a gap: events up to the gap's state are in it already
    this.delivered = 0;
    this.ended = null;
    this.attempt = 0; // failed (re)subscriptions in a row, for the backoff
    this.retry = null; // a resubscription waiting for its backoff (/ws)
  }

  get tokenScope() {
    return { job: this.job };
  }

  subscribeMessage() {
    return { op: "subscribe", job: this.job, after: this.cursor };
  }

  unsubscribeMessage() {
    return { op: "unsubscribe", job: this.job };
  }

  sseUrl(baseUrl, token) {
    const url = new URL(`/jobs/${encodeURIComponent(this.job)}/events`, baseUrl);
    if (this.cursor) url.searchParams.set("after", this.cursor);
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  /** Deliver one event unless it is one already delivered; returns false once the subscription is over. */
  accept(raw) {
    if (this.ended) return false;
    const event = { id: raw.id, type: raw.type, at: raw.at, attempt: raw.attempt, data: raw.data, job: this.job };
    if (this.cursor && compareIds(event.id, this.cursor) <= 0) return true;
    if (event.type === "submitted" && this.delivered > 0) {
      // A second `submitted`: the job was deleted and a new one took its id. Its events
      // are not this watch's (the server says so too; this is the second fence).
      this.end("deleted");
      return false;
    }
    this.cursor = event.id;
    this.delivered += 1;
    this.attempt = 0;
    call(this.callbacks.onEvent, event);
    if (!this.foldFloor || compareIds(event.id, this.foldFloor) > 0) {
      this.summary = foldEvent(this.summary, event);
      call(this.callbacks.onState, this.summary);
    }
    if (TERMINAL_TYPES.has(event.type)) {
      this.end("terminal");
      return false;
    }
    return true;
  }

  gap(state) {
    if (this.ended || !state) return;
    this.summary = summaryFromState(state);
    this.foldFloor = this.summary.lastEventId;
    call(this.callbacks.onGap, { job: this.job, state });
    call(this.callbacks.onState, this.summary);
  }

  skip(id) {
    if (!this.cursor || compareIds(id, this.cursor) > 0) this.cursor = id;
  }

  end(reason) {
    if (this.ended) return;
    this.ended = reason;
    call(this.callbacks.onEnd, reason, this.job);
  }

  // What the HTTP status of a refused EventSource means for this job; null: try again.
  endForStatus(status) {
    if (status === 204) return "terminal"; // finished, and the cursor is its last event
    if (status === 404) return this.delivered > 0 ? "deleted" : "not found";
    if (status === 400) return "bad request";
    return null;
  }
}

class FeedSubscription {
  constructor(options, callbacks) {
    this.key = "feed";
    this.cursor = options.after ?? null; // null: the live tail
    this.kind = options.kind ?? null;
    this.state = options.state ?? null;
    this.callbacks = callbacks;
    this.ended = null;
    this.attempt = 0;
    this.retry = null;
  }

  get tokenScope() {
    return { feed: true };
  }

  subscribeMessage() {
    return { op: "subscribe", feed: true, after: this.cursor, kind: this.kind, state: this.state };
  }

  unsubscribeMessage() {
    return { op: "unsubscribe", feed: true };
  }

  sseUrl(baseUrl, token) {
    const url = new URL("/events", baseUrl);
    if (this.cursor) url.searchParams.set("after", this.cursor);
    if (this.kind) url.searchParams.set("kind", this.kind);
    if (this.state) url.searchParams.set("state", this.state);
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  accept(raw) {
    if (this.ended) return false;
    if (this.cursor && compareIds(raw.id, this.cursor) <= 0) return true;
    this.cursor = raw.id;
    this.attempt = 0;
    const { feed: _feed, ...entry } = raw;
    call(this.callbacks.onEvent, entry);
    return true;
  }

  gap(message) {
    call(this.callbacks.onGap, { feed: true, first_available: message.first_available ?? null });
  }

  skip(id) {
    if (!this.cursor || compareIds(id, this.cursor) > 0) this.cursor = id;
  }

  end(reason) {
    if (this.ended) return;
    this.ended = reason;
    call(this.callbacks.onEnd, reason);
  }

  endForStatus(status) {
    return status === 400 ? "bad request" : null;
  }
}

// --- credentials: one token per scope, asked for again only after it was refused ---

class Tokens {
  constructor(getToken) {
    this.getToken = getToken;
    this.held = new Map();
  }

  async get(scope) {
    if (typeof this.getToken !== "function") return null;
    const key = JSON.stringify(scope);
    if (!this.held.has(key)) {
      const token = await this.getToken(scope);
      if (typeof token !== "string" || token === "") throw new Error("getToken did not return a token");
      this.held.set(key, token);
    }
    return this.held.get(key);
  }

  get canAsk() {
    return typeof this.getToken === "function";
  }

  refused(scope) {
    this.held.delete(JSON.stringify(scope));
  }
}

// --- a watch: subscriptions, carried over one WebSocket or one EventSource each ---

class Watch {
  constructor(options, subscriptions, socketScope, { persistent = false } = {}) {
    this.persistent = persistent; // stays open with no subscription left (watchJobs)
    this.options = { ...DEFAULTS, ...options };
    if (!["auto", "ws", "sse"].includes(this.options.transport)) {
      throw new TypeError(`transport must be "auto", "ws" or "sse", not ${JSON.stringify(this.options.transport)}`);
    }
    this.baseUrl = this.options.baseUrl ?? globalThis.location?.origin;
    if (!this.baseUrl) throw new TypeError("baseUrl is required outside a page");
    this.tokens = new Tokens(this.options.getToken);
    this.socketScope = socketScope;
    this.subs = new Map(subscriptions.map((sub) => [sub.key, sub]));
    this.transport = this.options.transport === "sse" ? "sse" : "ws";
    this.closed = false;
    this.status = null;
    this.socket = null;
    this.socketAttempt = 0;
    this.socketEverOpened = false;
    this.failuresBeforeOpen = 0;
    this.timers = new Set();
    this.streams = new Map(); // EventSource transport: sub key -> {source, opened}
    this.setStatus("connecting");
    this.start();
  }

  start() {
    if (this.transport === "ws") this.connectSocket();
    else for (const sub of this.subs.values()) this.openStream(sub);
  }

  later(delayMs, action) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.closed) action();
    }, delayMs);
    this.timers.add(timer);
  }

  delay(attempt) {
    return backoffDelay(attempt, this.options.minDelayMs, this.options.maxDelayMs);
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    call(this.options.onStatus, status);
  }

  activeSubs() {
    return [...this.subs.values()].filter((sub) => !sub.ended);
  }

  // Called after a subscription ended for good: the watch closes once none is left.
  settle() {
    for (const [key, sub] of this.subs) {
      if (sub.ended) {
        this.subs.delete(key);
        this.closeStream(key);
      }
    }
    if (this.subs.size === 0 && !this.persistent) this.shutdown();
  }

  close() {
    this.shutdown();
  }

  shutdown() {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const sub of this.subs.values()) clearTimeout(sub.retry);
    this.dropSocket();
    for (const key of [...this.streams.keys()]) this.closeStream(key);
    this.setStatus("closed");
  }

  endAll(reason) {
    for (const sub of this.activeSubs()) sub.end(reason);
    this.settle();
  }

  addSubscription(sub) {
    if (this.closed) throw new Error("this watch is closed");
    if (this.subs.has(sub.key)) return;
    this.subs.set(sub.key, sub);
    if (this.transport === "sse") this.openStream(sub);
    else if (this.socket?.readyState === OPEN) this.send(sub.subscribeMessage());
    else if (!this.socket) this.connectSocket();
  }

  removeSubscription(key) {
    const sub = this.subs.get(key);
    if (!sub) return;
    this.subs.delete(key);
    clearTimeout(sub.retry);
    if (this.transport === "sse") this.closeStream(key);
    else if (this.socket?.readyState === OPEN) this.send(sub.unsubscribeMessage());
  }

  // --- WebSocket ---

  socketUrl(token) {
    const url = new URL("/ws", this.baseUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  async connectSocket() {
    if (this.closed || this.socket || this.activeSubs().length === 0) return;
    this.socket = "connecting"; // claimed: no second connect while the token is asked for
    let token;
    try {
      token = await this.tokens.get(this.socketScope);
    } catch (error) {
      this.socket = null;
      this.socketFailed(false);
      return;
    }
    if (this.closed) {
      this.socket = null;
      return;
    }
    let socket;
    try {
      socket = new WebSocket(this.socketUrl(token));
    } catch (error) {
      this.socket = null;
      this.socketFailed(false);
      return;
    }
    this.socket = socket;
    let opened = false;
    let lastHeard = Date.now();
    // A peer that vanished without a close (a cable, a frozen proxy) is found by silence.
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (socket.readyState !== OPEN) return;
      if (Date.now() - lastHeard > 3 * this.options.pingMs) socket.close(4000, "no answer to pings");
      else this.send({ op: "ping" });
    }, this.options.pingMs);
    socket.onopen = () => {
      opened = true;
      this.socketEverOpened = true;
      this.failuresBeforeOpen = 0;
      for (const sub of this.activeSubs()) {
        // Sent now from its cursor: a retry still pending would only replay it again.
        clearTimeout(sub.retry);
        sub.retry = null;
        this.send(sub.subscribeMessage());
      }
    };
    socket.onmessage = (message) => {
      lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return; // not the protocol's; nothing to resume from it
      }
      this.onFrame(frame);
    };
    socket.onclose = (closing) => {
      clearInterval(this.heartbeat);
      if (this.socket === socket) this.socket = null;
      if (closing.code === TOKEN_REFUSED) {
        if (!this.tokens.canAsk) {
          // No getToken: nothing this page could present would change the answer.
          this.endAll("not authenticated");
          return;
        }
        this.tokens.refused(this.socketScope);
      }
      this.socketFailed(opened);
    };
  }

  socketFailed(opened) {
    if (this.closed) return;
    if (this.activeSubs().length === 0) {
      // Nothing left to follow: a watchJobs connects again when a job is added.
      if (!this.persistent) this.shutdown();
      return;
    }
    if (!opened) {
      this.failuresBeforeOpen += 1;
      if (this.options.transport === "auto" && !this.socketEverOpened
          && this.failuresBeforeOpen >= WS_FAILURES_BEFORE_FALLBACK) {
        // The server (or something before it) does not take WebSockets: EventSource,
        // from every subscription's cursor, for the rest of this watch's life.
        this.transport = "sse";
        this.setStatus("reconnecting");
        for (const sub of this.activeSubs()) this.openStream(sub);
        return;
      }
    }
    this.setStatus("reconnecting");
    this.later(this.delay(this.socketAttempt++), () => this.connectSocket());
  }

  dropSocket() {
    clearInterval(this.heartbeat);
    const socket = this.socket;
    this.socket = null;
    if (socket && typeof socket === "object") {
      socket.onclose = null;
      socket.onmessage = null;
      socket.close(1000, "closed by the page");
    }
  }

  send(message) {
    if (this.socket?.readyState === OPEN) this.socket.send(JSON.stringify(message));
  }

  subFor(frame) {
    if (frame.feed === true) return this.subs.get("feed");
    if (frame.job != null) return this.subs.get(`job:${frame.job}`);
    return undefined;
  }

  onFrame(frame) {
    const sub = this.subFor(frame);
    switch (frame.type) {
      case "pong":
        return;
      case "ping":
        this.send({ op: "ping" });
        return;
      case "subscribed":
        this.socketAttempt = 0;
        if (this.activeSubs().length > 0) this.setStatus("live");
        return;
      case "gap":
        if (sub) sub.gap(frame.feed ? frame : frame.state);
        return;
      case "skipped":
        if (sub) sub.skip(frame.id);
        return;
      case "end":
        if (!sub) {
          // The socket's own end ("token expired"): the close (4401) that follows reconnects.
          if (frame.reason === "token expired") this.tokens.refused(this.socketScope);
          return;
        }
        this.subscriptionEnded(sub, frame.reason);
        return;
      case "error":
        call(this.options.onError, frame);
        if (!sub || sub.ended) return;
        if (FINAL_ERRORS.has(frame.code)) {
          // A malformed `after`, or a token that covers another job: every retry would meet it again.
          sub.end(FINAL_ERRORS.get(frame.code));
          this.settle();
        } else {
          this.resubscribeLater(sub); // too many subscriptions, …: there may be room later
        }
        return;
      default:
        if (sub && frame.id != null) {
          sub.accept(frame);
          if (sub.ended) this.settle();
        }
    }
  }

  subscriptionEnded(sub, reason) {
    if (sub.ended) return;
    if (FINAL_REASONS.has(reason)) {
      sub.end(reason);
      this.settle();
    } else if (reason !== "unsubscribed") {
      // server stopping, event store unavailable, too slow, …: resume from the cursor.
      this.resubscribeLater(sub);
    }
  }

  resubscribeLater(sub) {
    this.setStatus("reconnecting");
    clearTimeout(sub.retry);
    sub.retry = setTimeout(() => {
      sub.retry = null;
      if (!this.closed && this.isCurrent(sub) && this.transport === "ws") this.send(sub.subscribeMessage());
    }, this.delay(sub.attempt++));
  }

  isCurrent(sub) {
    return !sub.ended && this.subs.get(sub.key) === sub;
  }

  // --- EventSource ---

  async openStream(sub) {
    if (this.closed || !this.isCurrent(sub) || this.streams.has(sub.key)) return;
    const stream = { source: null, opened: false };
    this.streams.set(sub.key, stream); // claimed while the token is asked for
    let url;
    try {
      url = sub.sseUrl(this.baseUrl, await this.tokens.get(sub.tokenScope));
    } catch {
      this.streams.delete(sub.key);
      this.streamFailed(sub, null);
      return;
    }
    if (this.closed || this.streams.get(sub.key) !== stream) return;
    const source = new EventSource(url);
    stream.source = source;
    const onMessage = (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!sub.accept(data)) this.settle();
    };
    for (const type of [...JOB_EVENT_TYPES, "message"]) source.addEventListener(type, onMessage);
    source.addEventListener("gap", (message) => {
      try {
        sub.gap(JSON.parse(message.data));
      } catch {
        // a gap we cannot read changes nothing the events do not tell
      }
    });
    source.onopen = () => {
      stream.opened = true;
      this.updateStreamStatus();
    };
    source.onerror = () => {
      // Never let EventSource retry by itself: after a non-200 it would not, and after
      // a dropped stream it would resume from its own Last-Event-ID, not our cursor.
      source.close();
      if (this.streams.get(sub.key) === stream) this.streams.delete(sub.key);
      if (sub.ended || this.closed) return;
      this.streamFailed(sub, stream.opened ? null : url);
    };
  }

  // A stream that never opened was refused: ask the same URL for the status EventSource hides.
  async streamFailed(sub, refusedUrl) {
    if (this.closed || !this.isCurrent(sub)) return;
    this.setStatus("reconnecting");
    let status = null;
    if (refusedUrl) {
      status = await statusOf(refusedUrl);
      if (this.closed || !this.isCurrent(sub)) return;
      const reason = sub.endForStatus(status);
      if (reason) {
        sub.end(reason);
        this.settle();
        return;
      }
      if (status === 401) {
        if (!this.tokens.canAsk) {
          sub.end("not authenticated");
          this.settle();
          return;
        }
        this.tokens.refused(sub.tokenScope);
      }
    }
    // A refused token is worth one quick retry with a fresh one; anything else backs off.
    const wait = status === 401 && sub.attempt === 0 ? 0 : this.delay(sub.attempt);
    sub.attempt += 1;
    this.later(wait, () => this.openStream(sub));
  }

  closeStream(key) {
    const stream = this.streams.get(key);
    this.streams.delete(key);
    stream?.source?.close();
  }

  updateStreamStatus() {
    const open = [...this.streams.values()].filter((stream) => stream.opened).length;
    if (open > 0 && open === this.activeSubs().length) this.setStatus("live");
  }
}

/** The status a GET of `url` answers (null: no answer), reading none of its body. */
async function statusOf(url) {
  const abort = new AbortController();
  try {
    const response = await fetch(url, { signal: abort.signal, headers: { Accept: "text/event-stream" }, cache: "no-store" });
    return response.status;
  } catch {
    return null;
  } finally {
    abort.abort(); // a 200 is a live event stream: leave at once, freeing its slot
  }
}

function callbacksOf(options) {
  const { onEvent, onState, onGap, onEnd } = options;
  return { onEvent, onState, onGap, onEnd };
}

function checkedJobId(id) {
  if (typeof id !== "string" || id === "") throw new TypeError(`a job id must be a non-empty string, not ${JSON.stringify(id)}`);
  return id;
}

/**
 * Follow one job: every event once, in order, then onEnd("terminal").
 * Returns {lastEventId, state, status, close()}.
 */
export function watchJob(jobId, options = {}) {
  const sub = new JobSubscription(checkedJobId(jobId), options.after, callbacksOf(options));
  const watch = new Watch(options, [sub], sub.tokenScope);
  return {
    get lastEventId() { return sub.cursor; },
    get state() { return sub.summary; },
    get status() { return watch.status; },
    get transport() { return watch.transport; },
    close: () => watch.close(),
  };
}

/**
 * Follow many jobs over one WebSocket (one EventSource each after a fallback). Callbacks get
 * each event with its `job`; onEnd(reason, jobId). Over /ws the token is asked for
 * with scope {feed: true}: a feed token covers every job its tenant sees.
 */
export function watchJobs(jobIds, options = {}) {
  const callbacks = callbacksOf(options);
  const subs = [...new Set(jobIds.map(checkedJobId))].map((id) => new JobSubscription(id, null, callbacks));
  // It stays open with no job left: a page adds jobs as they appear.
  const watch = new Watch(options, subs, { feed: true }, { persistent: true });
  return {
    get jobs() { return [...watch.subs.values()].map((sub) => sub.job); },
    get status() { return watch.status; },
    get transport() { return watch.transport; },
    lastEventId: (id) => watch.subs.get(`job:${id}`)?.cursor ?? null,
    state: (id) => watch.subs.get(`job:${id}`)?.summary ?? null,
    add: (id, { after = null } = {}) => watch.addSubscription(new JobSubscription(checkedJobId(id), after, callbacks)),
    remove: (id) => watch.removeSubscription(`job:${id}`),
    close: () => watch.close(),
  };
}

/**
 * Follow the activity feed: onEvent gets {id, job_id, kind, type, state, at, event_id, attempt, tenant}.
 * `after`: null for the live tail, "0-0" for all the feed still holds. Never ends by itself.
 */
export function watchFeed(options = {}) {
  const sub = new FeedSubscription(options, callbacksOf(options));
  const watch = new Watch(options, [sub], sub.tokenScope);
  return {
    get lastEventId() { return sub.cursor; },
    get status() { return watch.status; },
    get transport() { return watch.transport; },
    close: () => watch.close(),
  };
}
