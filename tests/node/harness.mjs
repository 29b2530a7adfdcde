// Runs Download Code files (functions/codegen) under plain Node 20 with each platform's request
// shape, for tests/integration/test_function_codegen_node.py. No npm packages: Node 20 has
// fetch, Request, Response and WebCrypto.
//
//   node tests/node/harness.mjs spec.json  ->  prints a JSON array of results
//
// spec = {
//   platform: "vercel" | "netlify" | "cloudflare" | "lambda-v1" | "lambda-v2",
//   modules: { <name>: { file: "/tmp/x.mjs", basePath: "/api/proxy-x" } },
//   cases: [{ name, module, env: {NAME: value}, method, path: "/extra" | "", query: "a=1",
//             headers: {name: value}, body: base64 | null, stream: bool }],
// }
// result = { name, status, headers: {lower-case name: value}, body: base64 }
//
// The generated .ts files are plain JavaScript, so the test copies them to .mjs files as they are.

import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const spec = JSON.parse(await readFile(process.argv[2], "utf8"));
const ORIGIN = "https://proxy.test";

// -- the environment each platform reads secrets from

let currentEnv = {};

function useEnv(env) {
  for (const name of Object.keys(currentEnv)) delete process.env[name];
  currentEnv = { ...env };
  Object.assign(process.env, currentEnv);
}

// Netlify Edge Functions read variables through the global `Netlify` object.
globalThis.Netlify = { env: { get: (name) => currentEnv[name] } };

// -- web platforms: a Request in, a Response out

function webRequest(testCase, basePath) {
  const url = ORIGIN + basePath + testCase.path + (testCase.query ? "?" + testCase.query : "");
  const init = { method: testCase.method, headers: testCase.headers };
  if (testCase.body !== null && testCase.method !== "GET" && testCase.method !== "HEAD") {
    const bytes = Buffer.from(testCase.body, "base64");
    if (testCase.stream) {
      // No Content-Length: the function must count the bytes itself.
      init.body = new ReadableStream({
        start(controller) {
          for (let at = 0; at < bytes.length; at += 65536) controller.enqueue(bytes.subarray(at, at + 65536));
          controller.close();
        },
      });
      init.duplex = "half";
    } else {
      init.body = bytes;
    }
  }
  return new Request(url, init);
}

async function fromResponse(response) {
  const headers = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  const body = Buffer.from(await response.arrayBuffer()).toString("base64");
  return { status: response.status, headers, body };
}

async function runWeb(module, testCase, basePath) {
  const request = webRequest(testCase, basePath);
  if (spec.platform === "vercel") return fromResponse(await module.default(request));
  if (spec.platform === "netlify") return fromResponse(await module.default(request, {}));
  return fromResponse(await module.default.fetch(request, { ...currentEnv }, {}));
}

// -- AWS Lambda: API Gateway events of payload versions 1.0 and 2.0

function isUtf8(bytes) {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

function lambdaEvent(testCase, version) {
  const bytes = testCase.body === null ? null : Buffer.from(testCase.body, "base64");
  const proxy = testCase.path ? decodeURIComponent(testCase.path.replace(/^\//, "")) : undefined;
  const resourcePath = "/proxy-fn" + testCase.path;
  const params = new URLSearchParams(testCase.query);
  if (version === 1) {
    const multi = {};
    for (const [name, value] of params) (multi[name] ||= []).push(value);
    const single = Object.fromEntries(Object.entries(multi).map(([name, values]) => [name, values.at(-1)]));
    const text = bytes !== null && isUtf8(bytes);
    return {
      resource: "/proxy-fn/{proxy+}",
      path: resourcePath,
      httpMethod: testCase.method,
      headers: { ...testCase.headers },
      multiValueHeaders: Object.fromEntries(Object.entries(testCase.headers).map(([k, v]) => [k, [v]])),
      queryStringParameters: Object.keys(single).length ? single : null,
      multiValueQueryStringParameters: Object.keys(multi).length ? multi : null,
      pathParameters: proxy === undefined ? null : { proxy },
      requestContext: { httpMethod: testCase.method, path: "/prod" + resourcePath, stage: "prod" },
      body: bytes === null ? null : text ? bytes.toString("utf8") : bytes.toString("base64"),
      isBase64Encoded: bytes !== null && !text,
    };
  }
  const headers = {};
  const cookies = [];
  for (const [name, value] of Object.entries(testCase.headers)) {
    if (name.toLowerCase() === "cookie") cookies.push(...value.split("; "));
    else headers[name.toLowerCase()] = value;
  }
  // HTTP APIs hand JSON over as text and everything else base64-encoded.
  const json = (headers["content-type"] || "").includes("json");
  const event = {
    version: "2.0",
    routeKey: "ANY /proxy-fn/{proxy+}",
    rawPath: resourcePath,
    rawQueryString: testCase.query,
    headers,
    requestContext: {
      domainName: "abc123.execute-api.eu-west-1.amazonaws.com",
      http: { method: testCase.method, path: resourcePath, protocol: "HTTP/1.1", sourceIp: "203.0.113.9" },
      stage: "$default",
    },
    isBase64Encoded: bytes !== null && !json,
  };
  if (cookies.length) event.cookies = cookies;
  if (testCase.query) event.queryStringParameters = Object.fromEntries(params);
  if (proxy !== undefined) event.pathParameters = { proxy };
  if (bytes !== null) event.body = json ? bytes.toString("utf8") : bytes.toString("base64");
  return event;
}

async function runLambda(module, testCase, version) {
  const answer = await module.handler(lambdaEvent(testCase, version));
  const headers = {};
  for (const [name, value] of Object.entries(answer.headers || {})) headers[name.toLowerCase()] = String(value);
  const body = Buffer.from(answer.body || "", answer.isBase64Encoded ? "base64" : "utf8").toString("base64");
  return { status: answer.statusCode, headers, body };
}

// -- run every case, one after the other

const modules = {};
for (const [name, entry] of Object.entries(spec.modules)) {
  modules[name] = { module: await import(pathToFileURL(entry.file).href), basePath: entry.basePath };
}

const results = [];
for (const testCase of spec.cases) {
  useEnv(testCase.env);
  const { module, basePath } = modules[testCase.module];
  let result;
  try {
    if (spec.platform === "lambda-v1") result = await runLambda(module, testCase, 1);
    else if (spec.platform === "lambda-v2") result = await runLambda(module, testCase, 2);
    else result = await runWeb(module, testCase, basePath);
  } catch (error) {
    result = { status: -1, headers: {}, body: Buffer.from(String(error && error.stack)).toString("base64") };
  }
  results.push({ name: testCase.name, ...result });
}
process.stdout.write(JSON.stringify(results));
