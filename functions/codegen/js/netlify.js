// ---- Netlify Edge Function ----

export default async (request, context) => {
  return serveRequest(request, (name) => Netlify.env.get(name), __BASE_PATH__);
};

export const config = { path: __NETLIFY_PATH__ };
