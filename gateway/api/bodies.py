"""How an ``/api`` handler's ``data: SomeStruct`` is read: strictly, by :func:`gateway.errors.decode_body`.

Litestar would otherwise convert the JSON itself, leniently (``"10"`` accepted for an int) and
with errors in its own shape. This DTO, set once on the ``/api`` layer, hands the raw bytes to
the same decoder every body went through before (unknown fields refused, each bound of
:mod:`billing.bounds` enforced, a 400 naming the field), and gives the OpenAPI schema the Struct
itself, bounds included. It changes neither what is accepted nor the errors: it only lets a
handler declare its body in its signature.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from litestar.connection import ASGIConnection
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.enums import ParamType
from litestar.exceptions import ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.typing import FieldDefinition

from gateway.errors import decode_body

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Reference, Schema
    from litestar.types.serialization import LitestarEncodableType

__all__ = ["StrictBody", "path_params_first"]


class StrictBody(AbstractDTO[Any]):
    # The body type of each handler, by handler id: one DTO class serves every route.
    _body_types: ClassVar[dict[str, Any]] = {}

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        cls._body_types[handler_id] = field_definition.annotation

    def decode_bytes(self, value: bytes) -> Any:
        return decode_body(value, self._body_types[self.asgi_connection.route_handler.handler_id])

    def decode_builtins(self, value: dict[str, Any]) -> Any:  # a form body: never declared on /api
        raise NotImplementedError

    def data_to_encodable_type(self, data: Any) -> LitestarEncodableType:  # only a data DTO
        raise NotImplementedError

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls._body_types[handler_id]))

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False


async def path_params_first(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Check the path parameters' bounds (:mod:`gateway.validation`) before anything else.

    Litestar checks them with the other parameters, after the body has been read: a route with
    a huge id and a bad body would answer about the body. Checked here first, on the ``/api``
    layer (so before the access guards, as before this DTO existed), a 64-bit overflow in the
    path is the 400 that names the path parameter, in the shape Litestar gives it."""
    annotations = getattr(handler.signature_model, "__annotations__", {})
    for name, value in connection.path_params.items():
        if name not in annotations:
            continue
        try:
            msgspec.convert(value, type=annotations[name], strict=False)
        except msgspec.ValidationError as error:
            message = str(error).split(" - ", maxsplit=1)[0]
            raise ValidationException(
                detail="invalid path parameter", extra=[{"message": message, "key": name, "source": ParamType.PATH}]
            ) from error
