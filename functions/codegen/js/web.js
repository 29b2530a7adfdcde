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

// The path after the function's own URL (basePath), split and decoded; null if malformed.
function segmentsAfter(pathname, basePath) {
  let rest = "";
  if (basePath === "") rest = pathname;
  else if (pathname === basePath || pathname.startsWith(basePath + "/")) rest = pathname.slice(basePath.length);
  rest = rest.replace(/^\/+/, "");
  if (rest === "") return [];
  try {
    return rest.split("/").map((segment) => decodeURIComponent(segment));
  } catch {
    return null;
  }
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
