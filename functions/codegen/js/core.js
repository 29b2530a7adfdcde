// ---- The handler: the same on every platform (Tollway's hosted /fn checks, in their order) ----
//
// A platform adapter (below) turns its request into `call` and answers what `handleProxy`
// returns. `call` = {
//   method: "POST",                    // upper case
//   header: (name) => string | null,   // a request header, name in lower case
//   query: "a=1&b=2",                  // the raw query string, without "?"
//   pathSegments: () => string[] | null, // the extra path after the function's own URL, split on
//                                        // "/", percent-encoded ([] for none; null if malformed)
//   readBody: () => Promise<Uint8Array | null>, // the body, null when it is over CONFIG.maxBodyBytes
// }
// and `getEnv(name)` reads one environment variable (undefined when it is not set).
// The answer: { status, headers: {name: value}, body: Uint8Array | ReadableStream | null }.

const BODY_METHODS = ["POST", "PUT", "DELETE"];
const NULL_BODY_STATUSES = [101, 103, 204, 205, 304];
const utf8 = new TextEncoder();

function errorAnswer(status, message, cors) {
  return {
    status,
    headers: { ...cors, "Content-Type": "application/json" },
    body: utf8.encode(JSON.stringify({ error: message })),
  };
}

// -- origins. CONFIG.allowedOrigins holds them normalised (lower case, no default port, no
// trailing "/"): "*", exact "https://app.example.com[:port]", or patterns "*.example.com[:port]"
// (either scheme) and "https://*.example.com[:port]", which match subdomains at any depth but
// not example.com itself. A call with no Origin (curl, a server) passes only with "*".

const DEFAULT_PORTS = { http: "80", https: "443" };

function parseOrigin(text) {
  const lower = String(text).toLowerCase().replace(/\/+$/, "");
  const cut = lower.indexOf("://");
  if (cut < 0) return null;
  const scheme = lower.slice(0, cut);
  const rest = lower.slice(cut + 3);
  if (!Object.prototype.hasOwnProperty.call(DEFAULT_PORTS, scheme) || !rest || /[/?#@ ]/.test(rest)) return null;
  let host = rest;
  let port = "";
  if (rest.startsWith("[")) {
    const closing = rest.indexOf("]");
    if (closing < 0) return null;
    host = rest.slice(0, closing + 1);
    port = rest.slice(closing + 1).replace(/^:/, "");
  } else if (rest.includes(":")) {
    host = rest.slice(0, rest.indexOf(":"));
    port = rest.slice(rest.indexOf(":") + 1);
  }
  if (port === DEFAULT_PORTS[scheme]) port = "";
  return { scheme, host, port, text: scheme + "://" + host + (port ? ":" + port : "") };
}

function originMatches(entry, given) {
  const cut = entry.indexOf("://");
  const scheme = cut >= 0 ? entry.slice(0, cut) : "";
  const rest = cut >= 0 ? entry.slice(cut + 3) : entry;
  if (!rest.startsWith("*.")) return entry === given.text;
  const colon = rest.indexOf(":");
  const suffix = (colon < 0 ? rest : rest.slice(0, colon)).slice(1); // ".example.com"
  const port = colon < 0 ? "" : rest.slice(colon + 1);
  return (
    given.host.endsWith(suffix) &&
    given.host.length > suffix.length &&
    given.port === port &&
    (!scheme || scheme === given.scheme)
  );
}

function originAllowed(origin) {
  if (CONFIG.allowedOrigins.includes("*")) return true;
  if (!origin) return false;
  const given = parseOrigin(origin);
  return given !== null && CONFIG.allowedOrigins.some((entry) => originMatches(entry, given));
}

// The CORS headers of every answer but a refused preflight. A refusal carries them too (the page
// may read why it was refused; reading a refusal grants nothing).
function corsHeaders(origin) {
  const headers = {
    "Access-Control-Allow-Methods": CONFIG.method + ", OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, x-proxy-token",
    "Access-Control-Max-Age": "86400",
  };
  if (CONFIG.allowedOrigins.includes("*")) {
    headers["Access-Control-Allow-Origin"] = "*";
  } else if (origin) {
    headers["Access-Control-Allow-Origin"] = origin;
    headers["Vary"] = "Origin";
  }
  return headers;
}

// -- the token: compared as SHA-256 digests, so the time taken says nothing of either value.

async function sha256(text) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", utf8.encode(text)));
}

async function sameToken(given, expected) {
  const [a, b] = await Promise.all([sha256(given), sha256(expected)]);
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}

// -- what goes upstream

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function ownSet(node, key, value) {
  // defineProperty, not `node[key] =`: a key "__proto__" is a plain field, never the prototype.
  Object.defineProperty(node, key, { value, writable: true, enumerable: true, configurable: true });
}

function setPath(body, dottedKey, value) {
  // "credentials.token" nests: {"credentials": {"token": value}}, keeping what is already there.
  const parts = dottedKey.split(".");
  let node = body;
  for (const part of parts.slice(0, -1)) {
    if (!Object.prototype.hasOwnProperty.call(node, part) || !isObject(node[part])) ownSet(node, part, {});
    node = node[part];
  }
  ownSet(node, parts[parts.length - 1], value);
}

function merged(base, bodySecrets) {
  for (const secret of bodySecrets) setPath(base, secret.key, secret.value);
  return base;
}

function jsonBody(value) {
  if (isObject(value) && Object.keys(value).length === 0) return { body: null, contentType: null };
  return { body: JSON.stringify(value), contentType: "application/json" };
}

function isJsonType(contentType) {
  const media = contentType.split(";")[0].trim().toLowerCase();
  return media === "application/json" || media.endsWith("+json") || media === "text/plain";
}

function parseJson(bytes) {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
}

// The body sent upstream, only for POST, PUT and DELETE:
//   the function has a body template   the template, body secrets merged in (the client's body is ignored)
//   pass-through, client JSON object   the client's object with the body secrets merged in
//   pass-through, any other body       the client's bytes, byte for byte, with its Content-Type
//   otherwise                          {} with the body secrets merged in
// A JSON object is sent only if it has a key. The client's body is read as JSON only when body
// secrets must go into it and its type is JSON, text/plain or absent.
function upstreamBody(call, clientBody, bodySecrets) {
  if (!BODY_METHODS.includes(CONFIG.method)) return { body: null, contentType: null };
  if (CONFIG.bodyTemplate !== null) {
    const template = JSON.parse(JSON.stringify(CONFIG.bodyTemplate));
    if (bodySecrets.length === 0) return jsonBody(template);
    return jsonBody(merged(isObject(template) ? template : {}, bodySecrets));
  }
  if (CONFIG.passThroughBody && clientBody.length > 0) {
    const contentType = call.header("content-type");
    if (bodySecrets.length > 0 && (contentType === null || isJsonType(contentType))) {
      const parsed = parseJson(clientBody);
      if (isObject(parsed)) return jsonBody(merged(parsed, bodySecrets));
    }
    return { body: clientBody, contentType };
  }
  return jsonBody(merged({}, bodySecrets));
}

// The extra path as it is appended (its percent-encoding kept), or null when it is refused:
// RFC 3986 path characters only, no "." or ".." segment however encoded, no encoded "/", "\"
// or NUL, no empty segment but a trailing slash.
const SEGMENT = /^[A-Za-z0-9\-._~!$&'()*+,;=:@%]*$/;
const BAD_ESCAPES = /%(2f|5c|00)/i;

function cleanExtraPath(segments) {
  for (let index = 0; index < segments.length; index++) {
    const segment = segments[index];
    if (segment === "") {
      if (index === segments.length - 1) continue;
      return null;
    }
    if (!SEGMENT.test(segment) || BAD_ESCAPES.test(segment)) return null;
    let decoded;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return null;
    }
    if (decoded === "." || decoded === "..") return null;
  }
  return segments.join("/");
}

function queryName(part) {
  const name = part.split("=")[0].replace(/\+/g, " ");
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}

function formEncode(text) {
  return encodeURIComponent(text).replace(/%20/g, "+");
}

// The target URL: the extra path appended (when the function forwards it), the client's query
// string added (when it forwards that), then each query secret set: a parameter of the same
// name, the target's or the client's, is removed first, so a caller cannot replace the secret.
function upstreamUrl(call, extraPath, querySecrets) {
  const url = new URL(CONFIG.targetUrl);
  if (CONFIG.forwardPath && extraPath) url.pathname = url.pathname.replace(/\/+$/, "") + "/" + extraPath;
  let query = url.search.slice(1);
  if (CONFIG.forwardQuery && call.query) query = query ? query + "&" + call.query : call.query;
  for (const secret of querySecrets) {
    const kept = query.split("&").filter((part) => part && queryName(part) !== secret.key);
    kept.push(formEncode(secret.key) + "=" + formEncode(secret.value));
    query = kept.join("&");
  }
  url.search = query;
  return url;
}

function applyTemplate(template, value) {
  // The first "${value}" only, as the hosted runtime; an empty template means the raw secret.
  if (!template) return value;
  const at = template.indexOf("${value}");
  return at < 0 ? template : template.slice(0, at) + value + template.slice(at + "${value}".length);
}

// -- the handler

async function handleProxy(call, getEnv, { buffered }) {
  // An extra path reaches a function only when it forwards it; otherwise there is no such URL.
  const segments = call.pathSegments();
  if (!CONFIG.forwardPath && (segments === null || segments.length > 0)) return errorAnswer(404, "Not found", {});

  const origin = call.header("origin");
  if (call.method === "OPTIONS") {
    if (!originAllowed(origin)) return errorAnswer(403, "Origin not allowed", {});
    return { status: 204, headers: corsHeaders(origin), body: null };
  }
  const cors = corsHeaders(origin);
  const declared = call.header("content-length");
  if (declared !== null && Number(declared) > CONFIG.maxBodyBytes) return errorAnswer(413, CONFIG.tooLarge, cors);

  const token = call.header("x-proxy-token");
  if (!token) return errorAnswer(401, "Missing x-proxy-token header", cors);
  const expected = getEnv("PROXY_TOKEN");
  if (!expected) {
    console.error("proxy: the environment variable PROXY_TOKEN is not set");
    return errorAnswer(500, "Failed to resolve proxy configuration", cors);
  }
  if (!(await sameToken(token, expected))) return errorAnswer(401, "Invalid proxy token", cors);
  if (!originAllowed(origin)) return errorAnswer(403, "Origin not allowed", cors);
  if (call.method !== CONFIG.method) {
    const message = "Method " + call.method + " not allowed. Expected " + CONFIG.method;
    return errorAnswer(405, message, { ...cors, Allow: CONFIG.method + ", OPTIONS" });
  }
  const extraPath = segments === null ? null : cleanExtraPath(segments);
  if (extraPath === null) return errorAnswer(400, "Invalid path", cors);
  const clientBody = await call.readBody();
  if (clientBody === null) return errorAnswer(413, CONFIG.tooLarge, cors);

  const secrets = [];
  for (const injection of CONFIG.injections) {
    const value = getEnv(injection.env);
    if (value === undefined || value === null) {
      console.error("proxy: the environment variable " + injection.env + " is not set");
      return errorAnswer(500, "Failed to resolve proxy configuration", cors);
    }
    secrets.push({ as: injection.as, key: injection.key, value: applyTemplate(injection.template, String(value)) });
  }

  let url;
  let init;
  try {
    url = upstreamUrl(call, extraPath, secrets.filter((secret) => secret.as === "query"));
    const { body, contentType } = upstreamBody(call, clientBody, secrets.filter((secret) => secret.as === "body"));
    // Only the function's static headers and secrets go upstream (a header secret replaces a
    // static header of the same name): never the client's headers, cookies or proxy token.
    const headers = new Headers();
    for (const [name, value] of Object.entries(CONFIG.headers)) headers.set(name, value);
    for (const secret of secrets) if (secret.as === "header") headers.set(secret.key, secret.value);
    if (contentType && !headers.has("content-type")) headers.set("content-type", contentType);
    if (!headers.has("user-agent")) headers.set("user-agent", "Tollway");
    init = { method: CONFIG.method, headers, body, redirect: "manual" };
  } catch (error) {
    console.error("proxy: cannot build the upstream request: " + (error && error.name));
    return errorAnswer(500, "Failed to resolve proxy configuration", cors);
  }

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), CONFIG.timeoutMs);
  try {
    const upstream = await fetch(url, { ...init, signal: controller.signal });
    const headers = { ...cors };
    const contentType = upstream.headers.get("content-type");
    if (contentType) headers["Content-Type"] = contentType;
    if (NULL_BODY_STATUSES.includes(upstream.status)) {
      if (upstream.body) await upstream.body.cancel();
      return { status: upstream.status, headers, body: null };
    }
    // A platform that can stream gets the target's body as it comes (SSE); Lambda reads it
    // whole, still within the timeout.
    const body = buffered ? new Uint8Array(await upstream.arrayBuffer()) : upstream.body;
    return { status: upstream.status, headers, body };
  } catch (error) {
    if (controller.signal.aborted) {
      return errorAnswer(504, "Gateway timeout: target API did not respond in time", cors);
    }
    console.error("proxy: the target API failed: " + (error && error.name));
    return errorAnswer(502, "Failed to reach target API", cors);
  } finally {
    clearTimeout(timer);
  }
}
