// ---- Vercel Edge Function ----

export const config = { runtime: "edge" };

export default async function handler(req) {
  return serveRequest(req, (name) => process.env[name], __BASE_PATH__);
}
