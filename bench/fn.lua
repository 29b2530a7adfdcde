-- wrk script: POST a chat body to a proxy function with its token from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-proxy-token"] = os.getenv("BENCH_TOKEN")
wrk.body = os.getenv("BENCH_BODY")
