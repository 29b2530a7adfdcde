// ---- AWS Lambda (Node.js 18+): API Gateway REST (payload 1.0), HTTP API (2.0), function URLs ----

function lambdaHeaders(event) {
  const headers = Object.create(null); // no prototype: a header named "constructor" is just a header
  for (const [name, value] of Object.entries(event.headers || {})) {
    if (value !== undefined && value !== null) headers[name.toLowerCase()] = String(value);
  }
  for (const [name, values] of Object.entries(event.multiValueHeaders || {})) {
    if (Array.isArray(values) && values.length > 0) headers[name.toLowerCase()] = values.join(", ");
  }
  return headers;
}

function lambdaQuery(event, v2) {
  if (v2) return event.rawQueryString || "";
  const params = new URLSearchParams();
  if (event.multiValueQueryStringParameters) {
    for (const [name, values] of Object.entries(event.multiValueQueryStringParameters)) {
      for (const value of values || []) params.append(name, value);
    }
  } else {
    for (const [name, value] of Object.entries(event.queryStringParameters || {})) params.append(name, value);
  }
  return params.toString();
}

// Percent-encode one decoded path segment, leaving the characters a path may hold as they are.
function encodeSegment(segment) {
  return encodeURIComponent(segment).replace(/%(3A|40|2C|3B|3D|2B|24|26|21|27|28|29|2A)/gi, (escape) =>
    decodeURIComponent(escape),
  );
}

// The extra path, split on "/" and percent-encoded: the greedy path parameter of a route like
// /proxy-x/{proxy+} (API Gateway hands it over decoded), or for a function URL the whole path.
function lambdaSegments(event, v2) {
  const proxy = event.pathParameters && event.pathParameters.proxy;
  if (proxy !== undefined && proxy !== null) {
    const rest = String(proxy).replace(/^\//, "");
    return rest === "" ? [] : rest.split("/").map(encodeSegment);
  }
  const domain = (event.requestContext && event.requestContext.domainName) || "";
  if (v2 && domain.includes(".lambda-url.")) {
    const rest = String(event.rawPath || "").replace(/^\//, "");
    return rest === "" ? [] : rest.split("/");
  }
  return [];
}

const TEXT_TYPES = /^(text\/|application\/(json|[\w.+-]*\+json|xml|[\w.+-]*\+xml|javascript|x-www-form-urlencoded))/i;

function lambdaBody(answer) {
  if (!answer.body || answer.body.length === 0) return { body: "", isBase64Encoded: false };
  const type = answer.headers["Content-Type"] || "";
  if (TEXT_TYPES.test(type)) {
    try {
      return { body: new TextDecoder("utf-8", { fatal: true }).decode(answer.body), isBase64Encoded: false };
    } catch {
      // not UTF-8 after all: sent as base64 below
    }
  }
  return { body: Buffer.from(answer.body).toString("base64"), isBase64Encoded: true };
}

export const handler = async (event) => {
  const v2 = event.version === "2.0" || Boolean(event.requestContext && event.requestContext.http);
  const headers = lambdaHeaders(event);
  const raw = event.body === undefined || event.body === null ? "" : event.body;
  const call = {
    method: String(v2 ? event.requestContext.http.method : event.httpMethod).toUpperCase(),
    header: (name) => (name in headers ? headers[name] : null),
    query: lambdaQuery(event, v2),
    pathSegments: () => lambdaSegments(event, v2),
    readBody: async () => {
      const body = new Uint8Array(Buffer.from(raw, event.isBase64Encoded ? "base64" : "utf8"));
      return body.byteLength > CONFIG.maxBodyBytes ? null : body;
    },
  };
  const answer = await handleProxy(call, (name) => process.env[name], { buffered: true });
  return { statusCode: answer.status, headers: answer.headers, ...lambdaBody(answer) };
};
