// ---- The handler: the same on every platform (Tollway's hosted /fn checks, in their order) ----
//
// A platform adapter (below) turns its request into `call` and answers what `handleProxy`
// returns. `call` = {
//   method: "POST",                    // upper case
//   header: (name) => string | null,   // a request header, name in lower case
//   query: "a=1&b=2",                  // the raw query string, without "?"
//   pathSegments: () => string[] | null, // extra path after the function's URL, decoded; null if malformed
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

// -- origins: "*", exact "https://app.example.com[:port]", patterns "*.example.com" or
// "https://*.example.com[:port]". A missing Origin (curl, a server) passes only with "*".

function parseOrigin(text) {
  let url;
  try {
    url = new URL(String(text).toLowerCase());
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  return { scheme: url.protocol.slice(0, -1), host: url.hostname, port: url.port };
}

function originMatches(pattern, given) {
  const cut = pattern.indexOf("://");
  const scheme = cut >= 0 ? pattern.slice(0, cut).toLowerCase() : "";
  const rest = cut >= 0 ? pattern.slice(cut + 3) : pattern;
  if (scheme && scheme !== given.scheme) return false;
  if (rest.startsWith("*.")) {
    // "x" stands in for the wildcard label; the port is read relative to the caller's scheme.
    const wanted = parseOrigin(given.scheme + "://x" + rest.slice(1));
    if (!wanted || wanted.port !== given.port) return false;
    const suffix = wanted.host.slice(1);
    return given.host.endsWith(suffix) && given.host.length > suffix.length;
  }
  if (!scheme) return false;
  const wanted = parseOrigin(pattern);
  return wanted !== null && wanted.host === given.host && wanted.port === given.port;
}

function originAllowed(origin) {
  if (CONFIG.allowedOrigins.includes("*")) return true;
  if (!origin) return false;
  const given = parseOrigin(origin);
  return given !== null && CONFIG.allowedOrigins.some((pattern) => originMatches(pattern, given));
}

function corsHeaders(origin, allowed) {
  const headers = {
    "Access-Control-Allow-Methods": CONFIG.method + ", OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, x-proxy-token",
    "Access-Control-Max-Age": "86400",
  };
  if (CONFIG.allowedOrigins.includes("*")) {
    headers["Access-Control-Allow-Origin"] = "*";
  } else if (allowed && origin) {
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

function jsonBody(base, bodySecrets) {
  if (isObject(base)) {
    for (const secret of bodySecrets) setPath(base, secret.key, secret.value);
    if (Object.keys(base).length === 0) return { body: null, contentType: null };
  }
  return { body: JSON.stringify(base), contentType: "application/json" };
}

function parseJson(bytes) {
  try {
    return { ok: true, value: JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) };
  } catch {
    return { ok: false, value: undefined };
  }
}

// The body sent upstream (only for POST, PUT and DELETE): the body template when the function
// has one (the client's body is then ignored); else, with pass-through on, the client's JSON
// object with the body secrets merged in, or any other body byte for byte with its content
// type; else (or for an empty client body) just the body secrets. An empty object is not sent.
function upstreamBody(call, clientBody, bodySecrets) {
  if (!BODY_METHODS.includes(CONFIG.method)) return { body: null, contentType: null };
  if (CONFIG.bodyTemplate !== null) return jsonBody(JSON.parse(JSON.stringify(CONFIG.bodyTemplate)), bodySecrets);
  if (CONFIG.passThroughBody && clientBody.length > 0) {
    const parsed = parseJson(clientBody);
    if (parsed.ok && isObject(parsed.value)) return jsonBody(parsed.value, bodySecrets);
    return { body: clientBody, contentType: call.header("content-type") };
  }
  return jsonBody({}, bodySecrets);
}

function encodeSegment(segment) {
  return encodeURIComponent(segment).replace(/%(3A|40|2C|3B|3D|2B|24|26|21|27|28|29|2A)/gi, (escape) =>
    decodeURIComponent(escape),
  );
}

// The target URL: the extra path appended (when the function forwards it), the client's query
// string added (when it forwards that), then the query secrets set over any of the same name.
function upstreamUrl(call, segments, querySecrets) {
  const url = new URL(CONFIG.targetUrl);
  if (CONFIG.forwardPath && segments.length > 0) {
    url.pathname = url.pathname.replace(/\/+$/, "") + "/" + segments.map(encodeSegment).join("/");
  }
  if (CONFIG.forwardQuery && call.query) {
    for (const [name, value] of new URLSearchParams(call.query)) url.searchParams.append(name, value);
  }
  for (const secret of querySecrets) url.searchParams.set(secret.key, secret.value);
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
  const origin = call.header("origin");
  const allowed = originAllowed(origin);
  if (call.method === "OPTIONS") {
    if (!allowed) return errorAnswer(403, "Origin not allowed", {});
    return { status: 204, headers: corsHeaders(origin, true), body: null };
  }
  const cors = corsHeaders(origin, allowed);
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
  if (!allowed) return errorAnswer(403, "Origin not allowed", cors);
  if (call.method !== CONFIG.method) {
    return errorAnswer(405, "Method " + call.method + " not allowed. Expected " + CONFIG.method, cors);
  }

  const secrets = [];
  for (const injection of CONFIG.injections) {
    const value = getEnv(injection.env);
    if (value === undefined || value === null) {
      console.error("proxy: the environment variable " + injection.env + " is not set");
      return errorAnswer(500, "Failed to resolve proxy configuration", cors);
    }
    secrets.push({ as: injection.as, key: injection.key, value: applyTemplate(injection.template, String(value)) });
  }

  const segments = CONFIG.forwardPath ? call.pathSegments() : [];
  if (segments === null || segments.some((segment) => segment === "." || segment === "..")) {
    return errorAnswer(400, "Invalid path", cors);
  }
  const clientBody = await call.readBody();
  if (clientBody === null) return errorAnswer(413, CONFIG.tooLarge, cors);

  let url;
  let init;
  try {
    url = upstreamUrl(call, segments, secrets.filter((secret) => secret.as === "query"));
    const { body, contentType } = upstreamBody(call, clientBody, secrets.filter((secret) => secret.as === "body"));
    // Only the function's static headers and secrets go upstream: never the client's headers,
    // cookies or proxy token.
    const headers = new Headers();
    for (const [name, value] of Object.entries(CONFIG.headers)) headers.set(name, value);
    if (contentType && !headers.has("content-type")) headers.set("content-type", contentType);
    for (const secret of secrets) if (secret.as === "header") headers.set(secret.key, secret.value);
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
    // A platform that can stream gets the upstream body as it comes (SSE); the others read it
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
