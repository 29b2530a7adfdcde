// ---- Web-standard adapter (Request in, Response out): Vercel Edge, Netlify Edge, Cloudflare ----

async function readLimited(request) {
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > CONFIG.maxBodyBytes) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

// The path after the function's own URL (basePath), split on "/", percent-encoding kept. The
// platform has already resolved any "." and ".." segments of the URL. A worker (basePath "")
// answers on its whole route: its path is the extra path when the function forwards one, and
// is not looked at otherwise (so a route like example.com/api/send* works as well).
function segmentsAfter(pathname, basePath) {
  let rest = "";
  if (basePath === "") rest = CONFIG.forwardPath ? pathname : "";
  else if (pathname === basePath || pathname.startsWith(basePath + "/")) rest = pathname.slice(basePath.length);
  rest = rest.replace(/^\//, "");
  return rest === "" ? [] : rest.split("/");
}

async function serveRequest(request, getEnv, basePath) {
  const url = new URL(request.url);
  const call = {
    method: request.method.toUpperCase(),
    header: (name) => request.headers.get(name),
    query: url.search.slice(1),
    pathSegments: () => segmentsAfter(url.pathname, basePath),
    readBody: () => readLimited(request),
  };
  const answer = await handleProxy(call, getEnv, { buffered: false });
  return new Response(answer.body, { status: answer.status, headers: answer.headers });
}
