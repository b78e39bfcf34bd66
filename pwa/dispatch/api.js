// The console's API client: the dispatcher's token in sessionStorage (gone with the tab),
// JSON in and out, errors as ApiError with the server's field and body.

const TOKEN_KEY = "fieldwork.dispatch.token";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export const api = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  headers(extra = {}) {
    return { ...(this.token ? { Authorization: `Bearer ${this.token}` } : {}), ...extra };
  },
  async request(method, path, body, extraHeaders = {}) {
    const init = { method, headers: this.headers(extraHeaders) };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      this.token = null;
      window.dispatchEvent(new Event("fieldwork:signed-out"));
    }
    if (response.status === 304) return { notModified: true, response };
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  },
  get(path, params) {
    return this.request("GET", params ? `${path}?${query(params)}` : path);
  },
  post(path, body) {
    return this.request("POST", path, body ?? {});
  },
  patch(path, body) {
    return this.request("PATCH", path, body);
  },
  put(path, body) {
    return this.request("PUT", path, body);
  },
  async signIn(username, password) {
    const data = await this.request("POST", "/api/auth/sign-in", { username, password });
    this.token = data.token;
    const me = await this.get("/api/me");
    if (!["dispatcher", "admin"].includes(me.role)) {
      this.token = null;
      throw new ApiError(403, { detail: "forbidden" });
    }
    return me;
  },
  /** Download a streamed export with the token (a plain link could not send it). */
  async download(path, params, filename) {
    const response = await fetch(`${path}?${query(params)}`, { headers: this.headers() });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const blob = await response.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  },
};

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  return search.toString();
}
