"""Download Code: self-hosting files for Vercel Edge, Netlify Edge, Cloudflare Workers and AWS
Lambda that behave like the hosted ``/fn`` runtime (envmanager.md §7, with PRODUCT.md's rules).

:func:`generate` is pure (a :class:`~functions.config.ResolvedFunction` in, a
:class:`GeneratedCode` out); :func:`function_code` loads the caller's function first.
"""

from __future__ import annotations

from functions.codegen.errors import (
    CodegenError,
    FunctionNotFound,
    FunctionUnresolved,
    SecretsUnavailable,
    UnknownPlatform,
    UnusableVariableKey,
)
from functions.codegen.platforms import PLATFORMS, Platform
from functions.codegen.render import TOKEN_ENV, EnvVar, GeneratedCode, file_slug, generate, js_literal, platform_of
from functions.codegen.service import function_code

__all__ = [
    "PLATFORMS",
    "TOKEN_ENV",
    "CodegenError",
    "EnvVar",
    "FunctionNotFound",
    "FunctionUnresolved",
    "GeneratedCode",
    "Platform",
    "SecretsUnavailable",
    "UnknownPlatform",
    "UnusableVariableKey",
    "file_slug",
    "function_code",
    "generate",
    "js_literal",
    "platform_of",
]
