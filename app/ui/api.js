// The REST calls the dashboard makes, with the tab's API key; errors carry the API's own
// `{error, detail}` so the page can say what went wrong in the server's words.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(key, { tokenTtl = null } = {}) {
    this.key = key; // null: open mode (the server runs without access control)
    this.tokenTtl = tokenTtl;
  }

  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : extra;
  }

  async request(method, path, { query, body, accept = "application/json" } = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    const init = { method, headers: this.headers({ Accept: accept }) };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new ApiError(0, "unreachable", `the API did not answer (${error.message})`);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async json(method, path, options) {
    const response = await this.request(method, path, options);
    return response.status === 204 ? null : response.json();
  }

  listJobs(filters) { return this.json("GET", "/jobs", { query: filters }); }
  job(id, { downloadToken = false } = {}) {
    return this.json("GET", `/jobs/${encodeURIComponent(id)}`, { query: downloadToken ? { download_token: "true" } : {} });
  }
  kinds() { return this.json("GET", "/kinds"); }
  submit(kind, params) { return this.json("POST", "/jobs", { body: { kind, params } }); }
  cancel(id) { return this.json("POST", `/jobs/${encodeURIComponent(id)}/cancel`); }
  remove(id) { return this.json("DELETE", `/jobs/${encodeURIComponent(id)}`); }

  // jobtrail.js's getToken: a job token for {job}, a feed token (which on /ws also covers
  // every job the tenant sees) for {feed}. Null in open mode: the sockets need none.
  async token(scope) {
    if (!this.key) return null;
    const body = this.tokenTtl ? { ttl_s: this.tokenTtl } : {};
    const path = scope && scope.job ? `/jobs/${encodeURIComponent(scope.job)}/tokens` : "/events/tokens";
    return (await this.json("POST", path, { body })).token;
  }

  // The audit PDF needs the key, which a plain link cannot send: fetch it, hand back a blob URL.
  async auditUrl(id) {
    const response = await this.request("GET", `/jobs/${encodeURIComponent(id)}/audit.pdf`, { accept: "application/pdf" });
    return URL.createObjectURL(await response.blob());
  }
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return new ApiError(response.status, body.error, body.detail);
  } catch {
    return new ApiError(response.status, "http_error", `HTTP ${response.status}`);
  }
}
