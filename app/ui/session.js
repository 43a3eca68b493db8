// Who the tab acts as. The key is kept in sessionStorage: it lives as long as the tab and is
// never written where another tab or a later visit could read it.

import { Api, ApiError } from "./api.js";

const KEY = "jobtrail.key";

// `?token_ttl=N` asks for N-second socket tokens (tests use it to see expiry mid-job).
function tokenTtl() {
  const value = Number(new URLSearchParams(location.search).get("token_ttl"));
  return Number.isInteger(value) && value > 0 ? value : null;
}

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

// {api, mode}: mode is "open" (no access control), "admin" or "tenant". Throws ApiError 401
// for a refused key (or none, when the server wants one).
export async function signIn(key) {
  const api = new Api(key || null, { tokenTtl: tokenTtl() });
  await api.listJobs({ limit: 1 });
  if (key) sessionStorage.setItem(KEY, key);
  if (!key) return { api, mode: "open" };
  return { api, mode: (await isAdmin(api)) ? "admin" : "tenant" };
}

// Only an admin key may list a tenant other than its own; "*" is no tenant's name, so a
// tenant key gets its 403 and an admin key an empty page.
async function isAdmin(api) {
  try {
    await api.listJobs({ limit: 1, tenant: "*" });
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return false;
    throw error;
  }
}
