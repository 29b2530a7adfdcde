"""Proxy functions: hosted proxies that inject a project's secret into calls to third-party APIs.

Account → projects → environments → variables (encrypted at rest) → proxy functions. A static
frontend calls ``/fn/{id}`` with ``x-proxy-token``; the runtime checks the call, injects the
secrets and forwards it, so no secret ever ships to the browser. This package is a domain
package like ``keys`` and ``billing``: it knows nothing of Litestar; the gateway uses it.
"""
