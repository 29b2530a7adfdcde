// ---- Cloudflare Worker (module syntax): secrets are bindings on `env` ----

export default {
  async fetch(request, env) {
    return serveRequest(request, (name) => env[name], __BASE_PATH__);
  },
};
