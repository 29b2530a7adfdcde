"""What the tables can store, as msgspec constrained types for every boundary Struct.

A value the database refuses (a NUL byte in a Postgres ``text``, a string longer than its
``VARCHAR(n)``, an integer past its ``INTEGER``/``BIGINT`` column) must be refused at the door
with a 400 naming the field, never accepted and left to fail later in a write that also
carries other requests' settlements. So every field that reaches a column is declared with
one of these types, whose bounds are the column's:

=================  =======================================  ==================================
type               bound                                    column it feeds
=================  =======================================  ==================================
``Id``             1 .. 2**63-1                             ``BIGINT`` primary / foreign keys
``PositiveInt32``  1 .. 2**31-1                             ``INTEGER`` limits (rpm, tpm)
``Name``           1..200 chars, one line, no control char  ``VARCHAR(200)`` names, slugs
``Email``          3..320 chars, one line                   ``VARCHAR(320)``
``Description``    ..1000 chars, no NUL (newlines allowed)  ``VARCHAR(1000)``
``Reason``         ..500 chars, no NUL                      ``VARCHAR(500)`` ledger reasons
``Url``            ..2000 chars, one line                   ``VARCHAR(2000)`` webhook URLs
``ShortText``      ..64 chars, one line                     ``VARCHAR(64)`` idempotency keys
``EndUser``        ..256 chars, one line                    ``VARCHAR(256)`` end-user ids
``CreditsText``    ..32 chars, one line                     parsed by :func:`billing.money.credits_to_micro`
=================  =======================================  ==================================

Lists stored as JSON are bounded too (``Items``): nothing an API caller sends is unbounded.
Money itself is capped where it is parsed (:data:`billing.money.MAX_CREDITS`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from billing.money import MAX_CREDITS

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "MAX_LIST_ITEMS",
    "NO_CONTROL",
    "NO_NUL",
    "Credits",
    "CreditsInt",
    "CreditsNumber",
    "CreditsText",
    "Description",
    "Email",
    "EndUser",
    "Id",
    "Item",
    "Items",
    "Name",
    "Password",
    "PositiveInt32",
    "Reason",
    "ShortText",
    "Url",
]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_LIST_ITEMS = 100

# ``\Z``, not ``$``: ``$`` also matches before a trailing newline, which would let one through.
NO_NUL = r"^[^\x00]*\Z"
NO_CONTROL = r"^[^\x00-\x1f\x7f]*\Z"

Id = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
PositiveInt32 = Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_CONTROL)]
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=NO_CONTROL)]
Description = Annotated[str, msgspec.Meta(max_length=1000, pattern=NO_NUL)]
Reason = Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL)]
Url = Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_CONTROL)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_CONTROL)]
EndUser = Annotated[str, msgspec.Meta(max_length=256, pattern=NO_CONTROL)]
# Hashed, never stored as sent; bounded so hashing a huge one cannot be used to burn CPU.
Password = Annotated[str, msgspec.Meta(max_length=1024, pattern=NO_NUL)]
# A list item that is one short line: a model slug, a CIDR, an origin, a country, a category.
Item = Annotated[str, msgspec.Meta(max_length=200, pattern=NO_CONTROL)]
Items = Annotated[list[Item], msgspec.Meta(max_length=MAX_LIST_ITEMS)]

# Credits as sent: a decimal string ("12.5") or a JSON number, within the cap that parsing
# enforces anyway (billing.money.MAX_CREDITS), so a huge number is a 400 naming the field.
CreditsText = Annotated[str, msgspec.Meta(max_length=32, pattern=NO_CONTROL)]
CreditsInt = Annotated[int, msgspec.Meta(ge=-MAX_CREDITS, le=MAX_CREDITS)]
CreditsNumber = Annotated[float, msgspec.Meta(ge=-MAX_CREDITS, le=MAX_CREDITS)]
Credits = CreditsText | CreditsInt | CreditsNumber
