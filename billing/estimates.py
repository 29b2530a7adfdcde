"""Worst cases: what a request may cost at most, reserved before it reaches a provider.

Every route's estimate lives here, next to the prices it multiplies, so the rule "the upstream
is never allowed more than was reserved" has one home. A plan may be served by any of its
deployments (fallbacks, retries), so every estimate covers the dearest of them. Each takes the
deployments as :class:`Offer` (anything with a price and an output limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import msgspec

from billing.pricing import ModelPrice

# Audio can be no shorter per byte than 8 kbit/s speech codecs: the hold for a file of unknown length.
WORST_AUDIO_BYTES_PER_S = 1_000
# Tokens a transcription model may write for an audio file, at most.
TRANSCRIPT_MAX_OUTPUT_TOKENS = 4096


class Offer(Protocol):
    """One deployment that may serve: its price (``None`` is refused before estimating) and the
    most output tokens one completion may use."""

    @property
    def price(self) -> ModelPrice | None: ...

    @property
    def max_output_tokens(self) -> int: ...


class Estimate(msgspec.Struct, frozen=True):
    """A call's worst case: tokens for the key's tpm limit and micro-credits to hold."""

    tokens: int
    amount_micro: int


class OutputRequest(msgspec.Struct, frozen=True):
    """What a generating request asks for: ``asked`` output tokens per completion (``None``: the
    client set no cap, the model's maximum is reserved and may be lowered to fit), ``choices``
    completions (``n`` × prompts, or ``best_of``)."""

    asked: int | None
    choices: int = 1


def price_of(offer: Offer) -> ModelPrice:
    if offer.price is None:
        raise ValueError("an unpriced deployment cannot be estimated")  # refused at planning
    return offer.price


def output_cap(offer: Offer, asked: int | None) -> int:
    """The output tokens one completion may use on ``offer``: what was asked, never more than the
    model's maximum (which is what a request without a cap reserves and is sent)."""
    return min(asked or offer.max_output_tokens, offer.max_output_tokens)


def tokens_worst_case(offers: Sequence[Offer], input_tokens: int, output: OutputRequest) -> Estimate:
    """Chat and legacy completions: every prompt token at the dearer of the input and cache-write
    rates, and every choice using its whole output cap."""
    most_output, amount = 0, 0
    for offer in offers:
        cap = output_cap(offer, output.asked)
        most_output = max(most_output, cap)
        amount = max(amount, price_of(offer).worst_case_micro(input_tokens, cap * output.choices))
    return Estimate(tokens=input_tokens + most_output * output.choices, amount_micro=amount)


def input_worst_case(offers: Sequence[Offer], input_tokens: int) -> Estimate:
    """Embeddings: input tokens only."""
    return Estimate(
        tokens=input_tokens, amount_micro=max(price_of(offer).worst_case_micro(input_tokens, 0) for offer in offers)
    )


def affordable_output(offers: Sequence[Offer], input_tokens: int, available_micro: int, choices: int = 1) -> int:
    """The largest output cap per completion whose worst case fits ``available_micro`` on every
    deployment of the plan (0 when not even the prompt fits)."""
    return min(
        min(offer.max_output_tokens, price_of(offer).affordable_output_tokens(input_tokens, available_micro) // choices)
        for offer in offers
    )


def image_variant(price: ModelPrice, size: str | None, quality: str | None) -> str:
    """The priced variant for a size and quality: ``size/quality``, else ``size``, else the default."""
    for candidate in (f"{size}/{quality}" if size and quality else "", size or ""):
        if candidate and candidate in price.per_unit_variants:
            return candidate
    return ""


def images_worst_case(
    offers: Sequence[Offer], images: int, size: str | None, quality: str | None, prompt_tokens: int
) -> Estimate:
    """Images at the price of their variant, plus the prompt and (for token-priced image models
    such as gpt-image-1) every image's output tokens."""
    amount = 0
    for offer in offers:
        price = price_of(offer)
        units = price.worst_case_units_micro(images, image_variant(price, size, quality), prompt_tokens)
        amount = max(amount, units + price.worst_case_micro(0, images * offer.max_output_tokens))
    return Estimate(tokens=prompt_tokens, amount_micro=amount)


def units_worst_case(offers: Sequence[Offer], units: int, variant: str = "") -> Estimate:
    """Unit-priced calls (speech characters, video seconds): ``units`` of ``variant``, or of the
    plain unit price on a deployment that does not price the variant."""
    amount = 0
    for offer in offers:
        price = price_of(offer)
        amount = max(amount, price.worst_case_units_micro(units, variant if variant in price.per_unit_variants else ""))
    return Estimate(tokens=0, amount_micro=amount)


def transcription_worst_case(offers: Sequence[Offer], audio_bytes: int) -> Estimate:
    """An audio file of unknown length: its longest plausible duration, or (for token-priced
    transcription models) a token count no file of that size exceeds."""
    worst_s = math.ceil(audio_bytes / WORST_AUDIO_BYTES_PER_S) or 1
    amount = max(
        max(
            price_of(offer).worst_case_units_micro(worst_s),
            price_of(offer).worst_case_micro(audio_bytes // 100, TRANSCRIPT_MAX_OUTPUT_TOKENS),
        )
        for offer in offers
    )
    return Estimate(tokens=0, amount_micro=amount)
