"""Settings: one TOML file plus ``TOLLWAY_*`` environment overrides.

Nothing here runs at import time: :func:`load_settings` is called by the CLI (or a test) and
its result is passed to ``create_app``. Unknown keys in the file are refused so a typo in an
operator's config fails loudly instead of being ignored.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from billing.money import MoneyError, credits_to_micro
from billing.payments.packages import CreditPackage, PackageError
from billing.pricing import UsdPrices
from providers.base import Capability
from providers.registry import KINDS, UnknownProviderKind, provider_kind

Category = Literal["text", "embedding", "image", "video", "stt", "tts"]

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./tollway.db"
DEMO_PROVIDER = "demo"
# What both uvicorn and the standard library understand (uvicorn's "trace" is not a logging level).
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class SettingsError(Exception):
    """The configuration cannot be used; the message names the offending setting."""


class ProviderSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # One of providers.registry.KINDS (checked by validate_settings, which lists them).
    kind: str
    base_url: str = ""
    api_key: str = ""
    api_key_env: str = ""
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    max_connections: int = 200
    deadline_s: float = 600.0
    catalogue_models: bool = False  # offer every model of this vendor in the shipped price list
    headers: dict[str, str] = {}
    api_version: str = ""  # azure: the api-version query parameter
    # The upstream serves OpenAI's Responses API at POST {base_url}/responses (api.openai.com,
    # Azure's v1 API): /v1/responses is then passed through to it instead of being translated
    # to chat completions. Only for kinds that pass JSON routes through (openai, azure, …).
    responses_api: bool = False

    @property
    def effective_base_url(self) -> str:
        entry = KINDS.get(self.kind)
        return entry.base_url(self.base_url) if entry is not None else self.base_url

    @property
    def speaks_openai(self) -> bool:
        entry = KINDS.get(self.kind)
        return entry is not None and entry.speaks_openai

    def resolved_api_key(self, env: Mapping[str, str]) -> str:
        """The upstream key, from the file or the environment variable it (or its kind) names."""
        entry = KINDS.get(self.kind)
        if entry is None:
            return self.api_key or (env.get(self.api_key_env, "") if self.api_key_env else "")
        return entry.api_key(self.api_key, self.api_key_env, env)


PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class DeploymentSettings(UsdPrices, forbid_unknown_fields=True, frozen=True):
    """One place a model can be served: a provider and its name for the model (for Azure, the
    deployment name). Prices default to the model's; set them when this deployment costs more."""

    provider: str
    upstream_model: str


class ModelSettings(UsdPrices, forbid_unknown_fields=True, frozen=True):
    """A model's slug settings: where it is served, its category and its prices (the fields of
    :class:`billing.pricing.UsdPrices`; unset ones come from the shipped price list)."""

    provider: str = ""
    upstream_model: str = ""
    category: Category | None = None  # unset: the price list's category for the model, else text
    # Unset: the shipped price list's value for the upstream model, else 4096 / 128000.
    max_output_tokens: PositiveInt | None = None
    context_length: PositiveInt | None = None
    deployments: list[DeploymentSettings] = []

    def all_deployments(self) -> list[DeploymentSettings]:
        """The model's own provider first (when set), then the listed deployments."""
        own = [DeploymentSettings(self.provider, self.upstream_model)] if self.provider else []
        return own + list(self.deployments)


PAYMENT_PROVIDERS = ("stripe", "lemonsqueezy")


class StripeSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Stripe Checkout (billing/payments/stripe.py): the secret API key opens checkouts, the
    endpoint's signing secret (``whsec_…``) verifies its webhooks; each from the file or the
    environment variable named by ``*_env``."""

    api_key: str = ""
    api_key_env: str = ""
    webhook_secret: str = ""
    webhook_secret_env: str = ""
    api_base: str = "https://api.stripe.com"

    def resolved(self, env: Mapping[str, str]) -> tuple[str, str]:
        """The API key and the webhook secret (``""`` when unset)."""
        return _from_env(self.api_key, self.api_key_env, env), _from_env(
            self.webhook_secret, self.webhook_secret_env, env
        )


class LemonSqueezySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """LemonSqueezy (billing/payments/lemonsqueezy.py): the API key and store open checkouts, the
    webhook's signing secret verifies its deliveries."""

    api_key: str = ""
    api_key_env: str = ""
    store_id: str = ""
    webhook_secret: str = ""
    webhook_secret_env: str = ""
    api_base: str = "https://api.lemonsqueezy.com"

    def resolved(self, env: Mapping[str, str]) -> tuple[str, str]:
        return _from_env(self.api_key, self.api_key_env, env), _from_env(
            self.webhook_secret, self.webhook_secret_env, env
        )


class PaymentSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Selling credits: which provider opens checkouts (``""``: none, the Buy button answers
    503), where the buyer returns (unset: the dashboard's Billing page on the host the request
    came to), how old a signed webhook may be, and each provider's credentials. A provider whose
    table has a key or a secret also receives webhooks, checkout provider or not (refunds of
    earlier purchases keep arriving after a switch)."""

    checkout_provider: Literal["stripe", "lemonsqueezy", ""] = ""
    success_url: str = ""
    cancel_url: str = ""
    webhook_tolerance_s: Annotated[int, msgspec.Meta(gt=0, le=86400)] = 300
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 20.0
    stripe: StripeSettings = msgspec.field(default_factory=StripeSettings)
    lemonsqueezy: LemonSqueezySettings = msgspec.field(default_factory=LemonSqueezySettings)

    def configured(self) -> list[str]:
        """The providers Tollway talks to: the checkout provider and any with a key or secret."""
        tables: dict[str, StripeSettings | LemonSqueezySettings] = {
            "stripe": self.stripe,
            "lemonsqueezy": self.lemonsqueezy,
        }
        return [
            name
            for name, table in tables.items()
            if name == self.checkout_provider
            or table.api_key
            or table.api_key_env
            or table.webhook_secret
            or table.webhook_secret_env
        ]


def _from_env(value: str, variable: str, env: Mapping[str, str]) -> str:
    return value or (env.get(variable, "") if variable else "")


class ResponseCacheSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The opt-in response cache (docs/response-cache.md): keys turn it on with ``cache_ttl_s``;
    these are the operator's bounds and the price of a hit."""

    # A hit costs this many thousandths of what the original answer cost (0 = free, 1000 = the
    # full price), rounded up to the micro-credit: an integer, money never goes through a float.
    price_per_mille: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    # Neither a request nor an answer larger than this is cached (a 10 MB prompt is never hashed).
    max_entry_bytes: PositiveInt = 1_000_000
    # The longest any entry lives, whatever a key allows (a key's cache_ttl_s is capped by it).
    max_ttl_s: PositiveInt = 7 * 86400
    # Without Redis: the most the process's embedded store holds (least recently used go first).
    embedded_max_bytes: PositiveInt = 64 * 1024 * 1024


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = ""
    redis_prefix: str = "tw:"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: PositiveInt = 1
    credits_per_usd: PositiveInt = 1000
    markup_percent: str = "0"
    auto_migrate: bool = True
    bootstrap: bool = True
    bootstrap_credits: str = "500"
    demo_provider: bool = True
    key_cache_ttl_s: float = 1.0
    balance_refresh_s: float = 5.0
    reservation_ttl_s: int = 900
    # How often each process's settlement writer looks for streams it did not feed, and how long
    # an entry another writer claimed may stay unacknowledged before it counts as abandoned.
    settlement_scan_s: float = 30.0
    settlement_claim_idle_s: float = 30.0
    # How long the writer gathers settlements before a round at low load (with Redis): each round
    # costs a claim, a transaction and an ack whatever it carries, so at 20 ms a request at
    # concurrency 1 paid ~0.35 ms of CPU for its share (bench/settle_cpu.py); reads of usage and
    # credits write the account's buffered settlements first, so nothing waits on it.
    settlement_batch_window_s: Annotated[float, msgspec.Meta(ge=0, le=5)] = 0.1
    log_level: str = "info"  # one of LOG_LEVELS, any case
    # How long a client may take to send a request's headers (slow-header attacks; see server.py).
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    trusted_proxies: list[str] = []
    country_header: str = ""
    country_fail_closed: bool = True
    geoip_database: str = ""
    cors_max_age_s: int = 600
    # Chat bodies beyond this are refused (413) before any token is counted.
    max_chat_body_bytes: PositiveInt = 8 * 1024 * 1024
    # The largest request body /api accepts (its bodies are small JSON); larger is a 413.
    api_max_body_bytes: PositiveInt = 1024 * 1024
    admin_token: str = ""
    webhook_allow_private: bool = False
    webhook_poll_s: float = 1.0
    webhook_retry_base_s: float = 10.0
    # Where users reach this gateway (``https://ai.example.com``): absolute links the gateway
    # sends out, such as the low_credits webhook's ``billing_url``. Unset: no such links (pages
    # link relative to the host they were served from).
    public_url: str = ""
    retry_attempts: PositiveInt = 3
    retry_backoff_s: float = 0.05
    breaker_failures: PositiveInt = 3
    breaker_cooldown_s: float = 30.0
    session_secret: str = ""
    session_ttl_s: PositiveInt = 900
    session_refresh_ttl_s: PositiveInt = 14 * 86400
    session_cookie_secure: bool = True
    # Proxy functions (functions/). The key ring seals variables and tokens: key id → base64 of
    # 32 random bytes, the greatest id seals new values. Unset, a key file next to the SQLite
    # database is made on first start (it must be backed up with the database); Postgres
    # deployments must configure keys.
    function_secret_keys: dict[str, str] = {}
    function_secret_key_file: str = ""
    function_cache_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=1.0)] = 1.0
    function_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 25.0
    function_max_body_bytes: PositiveInt = 1024 * 1024
    # Hosts (exact names) or networks (CIDR) a function may target although they are not public
    # https addresses: the SSRF guard's exceptions, e.g. an internal API or the tests' fakes.
    function_allow_hosts: list[str] = []
    # Credits charged per invocation, as a decimal string ("0" = free): reserved and settled like
    # any metered call when set.
    function_invocation_credits: str = "0"
    # --- ops (issue 14): hard-coded limits made settings -------------------------------------
    # The largest request body any route accepts (Litestar's request_max_body_size; a larger one
    # is a 413 in the OpenAI error shape). /api (api_max_body_bytes), chat (max_chat_body_bytes)
    # and /fn (function_max_body_bytes) keep their own, smaller caps under this one.
    max_request_body_bytes: PositiveInt = 10_000_000  # Litestar's own default, as before it was a setting
    # An HTTP(S) proxy for every upstream provider call ("" = connect directly), e.g.
    # http://user:password@proxy.internal:3128. Only this setting routes provider traffic through
    # a proxy: HTTP(S)_PROXY in the environment is still ignored. Proxy functions (/fn) never use
    # it (see docs/operations.md). Its password is masked wherever settings are printed.
    egress_proxy: str = ""
    # startup (issue 14): how long open requests and streams get to finish after SIGTERM before
    # the server closes them.
    graceful_shutdown_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # --- what an operator sees (README "Operating") ---
    # "text" lines, or one JSON object per line with the request's fields (gateway/logs.py).
    log_format: str = "text"
    # One line per /v1 request (logger tollway.access, INFO): ids, key prefix, account, model,
    # provider, status, latency, credits.
    access_log: bool = False
    # Prometheus /metrics; on the main port it needs the operator token (admin_token), unless
    # metrics_bind names a separate listener ("127.0.0.1:9464") that serves it without one.
    metrics: bool = True
    metrics_bind: str = ""
    # OpenTelemetry traces (gateway/tracing.py): an OTLP/HTTP traces URL, e.g.
    # http://otel-collector:4318/v1/traces, turns on one span per /v1 call ("" = no tracing).
    otel_traces_endpoint: str = ""
    otel_service_name: str = "tollway"
    # Overload (gateway/overload.py): requests one process serves at once; past it a 503
    # ``overloaded`` with Retry-After, so a burst is shed instead of queued. 0 = no cap.
    max_in_flight_requests: Annotated[int, msgspec.Meta(ge=0)] = 1024
    # Selling credits (billing/payments/): the packages on sale, and credits every new account
    # gets once when it signs up (not the bootstrap account: bootstrap_credits is its own).
    credit_packages: list[CreditPackage] = []
    signup_credits: str = "0"
    # The payment providers that sell them (docs/operations.md, Payments).
    payments: PaymentSettings = msgspec.field(default_factory=PaymentSettings)
    # The opt-in response cache (gateway/pipeline/cached.py): price of a hit and size bounds.
    response_cache: ResponseCacheSettings = ResponseCacheSettings()
    providers: dict[str, ProviderSettings] = {}
    models: dict[str, ModelSettings] = {}

    @property
    def uses_redis(self) -> bool:
        return bool(self.redis_url)


# --- environment overrides ------------------------------------------------------------------
# Every field of Settings can be set as TOLLWAY_<FIELD NAME IN CAPITALS>. The list is derived from
# the Struct itself, so a new setting is overridable the day it is added. A value is first read
# by the shape of its field (a bool accepts true/false/yes/no/on/off/1/0, a list of strings is
# comma-separated or a JSON array, a table such as providers or models is a JSON object that
# replaces the file's table), then converted through msgspec with the field's own annotation, so
# the constraints declared on the Struct (retry_attempts > 0, …) hold for env values too.

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_variable(field_name: str) -> str:
    """The environment variable that overrides ``field_name`` (``retry_attempts`` → ``TOLLWAY_RETRY_ATTEMPTS``)."""
    return f"TOLLWAY_{field_name.upper()}"


def _parse_env_value(variable: str, raw: str, shape: msgspec.inspect.Type) -> Any:
    """Read ``raw`` into the builtin value msgspec expects for a field of this ``shape``."""
    text = raw.strip()
    if isinstance(shape, msgspec.inspect.BoolType):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(f"{variable} must be true or false, got {raw!r}")
    if isinstance(shape, msgspec.inspect.IntType):
        try:
            return int(text)
        except ValueError as error:
            raise SettingsError(f"{variable} must be an int, got {raw!r}") from error
    if isinstance(shape, msgspec.inspect.FloatType):
        try:
            return float(text)
        except ValueError as error:
            raise SettingsError(f"{variable} must be a float, got {raw!r}") from error
    if isinstance(shape, msgspec.inspect.StrType):
        return raw
    if isinstance(shape, msgspec.inspect.ListType) and not text.startswith("["):
        return [item.strip() for item in text.split(",") if item.strip()]
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise SettingsError(f"{variable} must be JSON for this setting, got {raw!r}: {error}") from error


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings ``env`` sets, each checked against its field's type and constraints."""
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    shapes = {field.name: field.type for field in info.fields}
    annotations = {field.name: field.type for field in msgspec.structs.fields(Settings)}
    found: dict[str, Any] = {}
    for name, shape in shapes.items():
        variable = env_variable(name)
        raw = env.get(variable)
        if raw is None:
            continue
        value = _parse_env_value(variable, raw, shape)
        try:
            msgspec.convert(value, annotations[name])
        except msgspec.ValidationError as error:
            raise SettingsError(f"{variable}: {error} (got {raw!r})") from error
        found[name] = value
    return found


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read the TOML file (``config_path`` or ``$TOLLWAY_CONFIG``), then env, then ``overrides``."""
    env = os.environ if env is None else env
    path = config_path if config_path is not None else env.get("TOLLWAY_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise SettingsError(f"config file not found: {path}") from error
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"config file {path} is not valid TOML: {error}") from error
    raw.update(env_overrides(env))
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(raw, Settings)
    except msgspec.ValidationError as error:
        raise SettingsError(f"invalid configuration: {error}") from error
    validate_settings(settings)
    return settings


def _decimal(value: str, where: str) -> Decimal:
    try:
        parsed = Decimal(value)
    except InvalidOperation as error:
        raise SettingsError(f"{where} must be a decimal string, got {value!r}") from error
    if not parsed.is_finite() or parsed < 0:
        raise SettingsError(f"{where} must be a non-negative decimal, got {value!r}")
    return parsed


def _check_credit_packages(packages: list[CreditPackage], signup_credits: str) -> None:
    seen: set[str] = set()
    for package in packages:
        if package.id in seen:
            raise SettingsError(f"credit_packages: package id {package.id!r} appears twice")
        seen.add(package.id)
        try:
            package.check()
        except PackageError as error:
            raise SettingsError(f"credit_packages: {error}") from error
    try:
        if credits_to_micro(signup_credits) < 0:
            raise SettingsError("signup_credits must not be negative")
    except MoneyError as error:
        raise SettingsError(f"signup_credits: {error}") from error


def validate_settings(settings: Settings) -> None:
    """Cross-field checks msgspec cannot express; each error names the setting."""
    _decimal(settings.markup_percent, "markup_percent")
    if settings.log_level.lower() not in LOG_LEVELS:
        raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {settings.log_level!r}")
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as error:
            raise SettingsError(f"trusted_proxies: {proxy!r} is not an IP address or CIDR") from error
    _decimal(settings.bootstrap_credits, "bootstrap_credits")
    _check_public_url(settings.public_url)
    _check_credit_packages(settings.credit_packages, settings.signup_credits)
    _check_payments(settings.payments)
    _check_egress_proxy(settings.egress_proxy)
    _check_otel_endpoint(settings.otel_traces_endpoint)
    _decimal(settings.function_invocation_credits, "function_invocation_credits")
    try:
        credits_to_micro(settings.function_invocation_credits)
    except MoneyError as error:
        raise SettingsError(f"function_invocation_credits: {error}") from error
    for entry in settings.function_allow_hosts:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_NAME.match(entry):
                raise SettingsError(
                    f"function_allow_hosts: {entry!r} is neither a host name nor a CIDR network"
                ) from None
    if settings.admin_token and len(settings.admin_token) < 32:
        raise SettingsError("admin_token must be at least 32 characters (use a random secret)")
    if settings.session_secret and len(settings.session_secret) < 32:
        raise SettingsError("session_secret must be at least 32 characters (use a random secret)")
    if settings.geoip_database and not Path(settings.geoip_database).is_file():
        raise SettingsError(f"geoip_database: no such file {settings.geoip_database!r}")
    if settings.log_format not in ("text", "json"):
        raise SettingsError(f"log_format must be text or json, got {settings.log_format!r}")
    if settings.metrics_bind:
        metrics_address(settings.metrics_bind)
        if settings.workers > 1:
            raise SettingsError(
                "metrics_bind serves one process's metrics and each worker counts its own: run one "
                "worker per replica and scrape each replica (README, Operating)"
            )
    if settings.workers > 1 and not settings.uses_redis:
        raise SettingsError(
            "more than one worker needs Redis: set redis_url (TOLLWAY_REDIS_URL); the embedded "
            "counter store lives in one process and cannot share budgets across workers"
        )
    # Redis Cluster (redis_url = "redis+cluster://host:port", billing/counters/redis.py): every
    # key of an account carries the hash tag {a<id>}, so a brace in the prefix would either put
    # all accounts in one slot or split one account's keys across slots (scripts then fail).
    if "{" in settings.redis_prefix or "}" in settings.redis_prefix:
        raise SettingsError("redis_prefix must not contain { or }: Tollway puts the account in a hash tag")
    if settings.redis_url.startswith(("redis+cluster://", "rediss+cluster://")):
        first, _others = _cluster_seeds(settings.redis_url)
        if urlsplit(first).path.strip("/") not in ("", "0"):
            raise SettingsError("redis_url: a Redis Cluster has only database 0 (drop the /N from the URL)")
    if not settings.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise SettingsError(
            "database_url must start with sqlite+aiosqlite:// or postgresql+asyncpg://, "
            f"got {settings.database_url.split('://', 1)[0]}://…"
        )
    for name, provider in settings.providers.items():
        try:
            kind = provider_kind(provider.kind)
        except UnknownProviderKind as error:
            raise SettingsError(f"providers.{name}.kind: {error}") from error
        if kind.needs_upstream and not provider.effective_base_url:
            raise SettingsError(f"providers.{name}.base_url is required for kind {provider.kind!r}")
        if provider.responses_api and Capability.JSON not in kind.capabilities:
            raise SettingsError(
                f"providers.{name}.responses_api: kind {provider.kind!r} does not pass JSON routes through"
            )
        if provider.responses_api and provider.kind == "azure":
            # Azure serves the Responses API on its v1 API only, not under deployment URLs.
            raise SettingsError(
                f"providers.{name}.responses_api: Azure serves the Responses API on its v1 API; configure "
                'it as kind = "openai" with base_url = "https://<resource>.openai.azure.com/openai/v1"'
            )
    for slug, model in settings.models.items():
        if "/" not in slug:
            raise SettingsError(f"models.{slug!r}: model slugs are provider/model")
        if model.provider and not model.upstream_model:
            raise SettingsError(f"models.{slug!r}.upstream_model is required with provider")
        if not model.all_deployments():
            raise SettingsError(f"models.{slug!r} needs a provider and upstream_model, or deployments")
        for index, deployment in enumerate(model.all_deployments()):
            where = f"models.{slug!r}" if index == 0 and model.provider else f"models.{slug!r}.deployments"
            if deployment.provider not in settings.providers and not (
                deployment.provider == DEMO_PROVIDER and settings.demo_provider
            ):
                raise SettingsError(f"{where}.provider names unknown provider {deployment.provider!r}")


def _check_public_url(url: str) -> None:
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(f"public_url must be an http:// or https:// URL with a host (no query), got {url!r}")


def _check_http_url(value: str, where: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{where} must be an http:// or https:// URL with a host, got {value!r}")


def _check_payments(payments: PaymentSettings) -> None:
    _check_http_url(payments.stripe.api_base, "payments.stripe.api_base")
    _check_http_url(payments.lemonsqueezy.api_base, "payments.lemonsqueezy.api_base")
    for name in ("success_url", "cancel_url"):
        if getattr(payments, name):
            _check_http_url(getattr(payments, name), f"payments.{name}")
    if payments.checkout_provider == "lemonsqueezy" and not payments.lemonsqueezy.store_id:
        raise SettingsError("payments.lemonsqueezy.store_id is required when checkout_provider is lemonsqueezy")
    if payments.lemonsqueezy.store_id and not payments.lemonsqueezy.store_id.isdigit():
        raise SettingsError("payments.lemonsqueezy.store_id must be the store's number (Settings → Stores)")


def _cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    from billing.counters.redis import cluster_seeds

    try:
        return cluster_seeds(url)
    except ValueError as error:  # the URL is not echoed: it may carry Redis's password
        raise SettingsError(f"redis_url: {error} (redis+cluster://host:port,host:port)") from None


def _check_otel_endpoint(url: str) -> None:
    if not url:
        return
    parts = urlsplit(url)
    # The URL itself is never echoed: a collector's URL may carry credentials.
    if parts.scheme not in ("http", "https"):
        raise SettingsError("otel_traces_endpoint must be an http:// or https:// URL (or empty for no tracing)")
    if not parts.hostname:
        raise SettingsError("otel_traces_endpoint must name a host")
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        raise SettingsError("otel_traces_endpoint needs OpenTelemetry's SDK: pip install 'tollway[otel]'")


def _check_egress_proxy(url: str) -> None:
    if not url:
        return
    parts = urlsplit(url)
    # The URL itself is never echoed: it may carry the proxy's password.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError("egress_proxy must be an http:// or https:// URL with a host (or empty for none)")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise SettingsError("egress_proxy has an invalid port") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingsError("egress_proxy must be the proxy's address only (scheme, host, port), without a path")


def metrics_address(bind: str) -> tuple[str, int]:
    """``host:port`` of ``metrics_bind`` (``[::1]:9464`` for IPv6)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"metrics_bind must be host:port, e.g. 127.0.0.1:9464, got {bind!r}")
    return host, int(port)


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a SQLite URL (``None`` for other databases or in-memory SQLite)."""
    prefix = "sqlite+aiosqlite:///"
    if not database_url.startswith(prefix):
        return None
    rest = database_url[len(prefix) :].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


# --- secrets ----------------------------------------------------------------------------------
# The one list of fields whose values are never printed (``tollway config check``, logs): a field
# of any settings Struct with one of these names is masked wherever it appears, a mapping (such
# as a provider's extra headers, which may carry credentials) has each value masked, and every
# ``*_url`` keeps its shape but loses its password. tests/unit/test_settings_env.py fails when a
# field whose name looks secret is added without being listed here or declared harmless there.
SECRET_FIELDS = frozenset(
    {"admin_token", "session_secret", "api_key", "headers", "function_secret_keys", "webhook_secret"}
)
MASK = "********"
# Settings that hold a URL without ending in _url: shown with their password masked, like *_url.
URL_SECRET_FIELDS = frozenset({"egress_proxy", "otel_traces_endpoint"})


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = "&".join(
        f"{key}={MASK}" if key == "password" else f"{key}={value}"
        for key, value in (item.partition("=")[::2] for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact(name: str, value: Any) -> Any:
    if name in SECRET_FIELDS and value:
        return {key: MASK for key in value} if isinstance(value, dict) else MASK
    if (name.endswith("_url") or name in URL_SECRET_FIELDS) and isinstance(value, str):
        return _mask_url(value)
    if isinstance(value, dict):
        return {key: _redact(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(name, item) for item in value]
    return value


def redacted(settings: Settings) -> dict[str, Any]:
    """``settings`` as builtins, safe to print: see SECRET_FIELDS. An unset secret stays ``""``
    so the reader can tell it is unset."""
    builtins: dict[str, Any] = msgspec.to_builtins(settings)
    return {name: _redact(name, value) for name, value in builtins.items()}
