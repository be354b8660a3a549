"""Spans to OTLP/HTTP: the SDK's exporter, with the request encoded here.

Owns: `encode` (ended spans to the bytes of the OTLP `ExportTraceServiceRequest`, in
protobuf's wire format) and `OtlpExporter`, the SDK's `OTLPSpanExporter` sending what
`encode` makes (adapters/tracing.py puts it behind `Backoff`).

Why: the SDK's encoder makes every span, attribute and value a protobuf message of its
own and hands each to its parent's constructor, which copies it (upb serialises and
parses a sub-message given that way), and it hashes the span's `Resource` (a JSON dump
of its attributes) once per span to group them: about 90 us per span of the gateway's
(docs/observability.md), so a batch of 512 took ~45 ms of the gateway's core. Filling
upb messages field by field still costs ~1.5 us per attribute; writing the wire format
directly, with each attribute's bytes made once per batch (a batch's spans repeat most
of their attributes: model, tenant, provider...), is a few us per span.

Rules:
- The bytes decode to the message the SDK's `encode_spans` makes, field for field
  (opentelemetry-exporter-otlp-proto-common; tests compare them): resource and scope
  always present, a span's `status` always present, `flags` saying whether the parent
  (or a link's context) is remote, `trace_state` as `k=v` pairs, the parent's span id
  when there is one; proto3 defaults left out, a value's oneof always written. Fields
  come in field-number order. Spans keep their order; resources and scopes come in the
  order first seen, equal ones merged (as the SDK's dict does).
- Attribute values: bool, str, int (int64), float, bytes, None (an empty value),
  sequences (arrays) and mappings (key-value lists), as the SDK's; a value of another
  type, or an int past int64, is left out with a warning (the SDK logs it and leaves it
  out too).
- `OtlpExporter.export` does what the SDK exporter's own does (its size limit, its
  own metrics, its HTTP client with its retries) with these bytes; an SDK whose exporter
  is not built that way (another version) exports through its own `export`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import SpanContext, SpanKind

log = logging.getLogger(__name__)

KINDS = {  # Span.SpanKind's numbers
    SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4, SpanKind.CONSUMER: 5,
}
HAS_IS_REMOTE = 0x100  # SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
IS_REMOTE = 0x200  # SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
CACHED = (str, bool, int, float)  # attribute values whose bytes a batch makes once (and tuples of str)
FIXED64 = struct.Struct("<Q")
DOUBLE = struct.Struct("<d")
FIXED32 = struct.Struct("<I")
Cache = dict[tuple[str, type, object], bytes]

# field keys: (number << 3) | wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit)
REQUEST_RESOURCE_SPANS = 0x0A
RESOURCE_SPANS_RESOURCE, RESOURCE_SPANS_SCOPE_SPANS, RESOURCE_SPANS_SCHEMA = 0x0A, 0x12, 0x1A
RESOURCE_ATTRIBUTES = 0x0A
SCOPE_SPANS_SCOPE, SCOPE_SPANS_SPANS, SCOPE_SPANS_SCHEMA = 0x0A, 0x12, 0x1A
SCOPE_NAME, SCOPE_VERSION, SCOPE_ATTRIBUTES = 0x0A, 0x12, 0x1A
KV_KEY, KV_VALUE = 0x0A, 0x12
ANY_STRING, ANY_BOOL, ANY_INT, ANY_DOUBLE, ANY_ARRAY, ANY_KVLIST, ANY_BYTES = 0x0A, 0x10, 0x18, 0x21, 0x2A, 0x32, 0x3A
LIST_VALUES = 0x0A  # ArrayValue.values, KeyValueList.values
EVENT_TIME, EVENT_NAME, EVENT_ATTRIBUTES, EVENT_DROPPED = 0x09, 0x12, 0x1A, 0x20
LINK_TRACE, LINK_SPAN, LINK_ATTRIBUTES, LINK_DROPPED, LINK_FLAGS = 0x0A, 0x12, 0x22, 0x28, 0x35
STATUS_MESSAGE, STATUS_CODE = 0x12, 0x18


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return bytes((n,))
    n &= 0xFFFFFFFFFFFFFFFF  # a negative int64: ten bytes, two's complement
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(key: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or a message)."""
    return bytes((key,)) + _varint(len(payload)) + payload


def _text(key: int, text: str) -> bytes:
    return _field(key, text.encode())


def _flags(context: SpanContext | None) -> int:
    return HAS_IS_REMOTE | IS_REMOTE if context is not None and context.is_remote else HAS_IS_REMOTE


def _valid(value: object) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63  # int64, as protobuf takes it (the SDK's encoder fails past it)
    if value is None or isinstance(value, (bool, str, float, bytes)):
        return True
    if isinstance(value, Sequence):
        return all(_valid(v) for v in value)
    if isinstance(value, Mapping):
        return all(_valid(v) for v in value.values())
    return False


def _value(value: object) -> bytes:
    """An `AnyValue` of `value` (checked by `_valid`), as the SDK's `_encode_value` makes it."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _text(ANY_STRING, value)
    if isinstance(value, int):
        return bytes((ANY_INT,)) + _varint(value)
    if isinstance(value, float):
        return bytes((ANY_DOUBLE,)) + DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(ANY_BYTES, value)
    if value is None:
        return b""
    if isinstance(value, Sequence):
        return _field(ANY_ARRAY, b"".join(_field(LIST_VALUES, _value(v)) for v in value))
    assert isinstance(value, Mapping)
    pairs = (_field(LIST_VALUES, _pair(str(k), v)) for k, v in value.items())
    return _field(ANY_KVLIST, b"".join(pairs))


def _pair(key: str, value: object) -> bytes:
    return _text(KV_KEY, key) + _field(KV_VALUE, _value(value))


def _attributes(key: int, attributes: Mapping[str, object] | None, cache: Cache) -> bytes:
    """Each attribute as the repeated `KeyValue` field `key` (from `cache` when it is there)."""
    if not attributes:
        return b""
    found = []
    for name, value in attributes.items():
        kind = type(value)
        if kind is int and not -(2**63) <= value < 2**63:  # type: ignore[operator]
            log.warning("span attribute %s left out of the export: an int past int64", name)
        elif kind in CACHED or (kind is tuple and all(type(v) is str for v in value)):  # type: ignore[attr-defined]
            item = (name, kind, value)
            made = cache.get(item)
            if made is None:
                made = cache[item] = _field(key, _pair(name, value))
            found.append(made)
        elif _valid(value):
            found.append(_field(key, _pair(name, value)))
        else:
            log.warning("span attribute %s left out of the export: a %s", name, kind.__name__)
    return b"".join(found)


def _span(span: ReadableSpan, cache: Cache) -> bytes:
    context = span.context
    assert context is not None, "an ended span has its context"
    out = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"), b"\x12\x08", context.span_id.to_bytes(8, "big")]
    if context.trace_state:
        out.append(_text(0x1A, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    parent = span.parent
    if parent:
        out += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        out.append(_text(0x2A, span.name))
    out.append(b"\x30" + _varint(KINDS[span.kind]))
    if span.start_time:
        out += (b"\x39", FIXED64.pack(span.start_time))
    if span.end_time:
        out += (b"\x41", FIXED64.pack(span.end_time))
    out.append(_attributes(0x4A, span.attributes, cache))
    if span.dropped_attributes:
        out.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        found = [bytes((EVENT_TIME,)) + FIXED64.pack(event.timestamp)] if event.timestamp else []
        if event.name:
            found.append(_text(EVENT_NAME, event.name))
        found.append(_attributes(EVENT_ATTRIBUTES, event.attributes, cache))
        if event.dropped_attributes:
            found.append(bytes((EVENT_DROPPED,)) + _varint(event.dropped_attributes))
        out.append(_field(0x5A, b"".join(found)))
    if span.dropped_events:
        out.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        linked = link.context
        found = [bytes((LINK_TRACE, 16)), linked.trace_id.to_bytes(16, "big"),
                 bytes((LINK_SPAN, 8)), linked.span_id.to_bytes(8, "big"),
                 _attributes(LINK_ATTRIBUTES, link.attributes, cache)]
        if link.dropped_attributes:
            found.append(bytes((LINK_DROPPED,)) + _varint(link.dropped_attributes))
        found.append(bytes((LINK_FLAGS,)) + FIXED32.pack(_flags(linked)))
        out.append(_field(0x6A, b"".join(found)))
    if span.dropped_links:
        out.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    message = _text(STATUS_MESSAGE, status.description) if status.description else b""
    code = status.status_code.value
    out.append(_field(0x7A, message + (bytes((STATUS_CODE,)) + _varint(code) if code else b"")))
    out += (b"\x85\x01", FIXED32.pack(_flags(parent)))  # field 16, 32-bit
    return b"".join(out)


def _resource(resource: Resource, cache: Cache) -> bytes:
    return _field(RESOURCE_SPANS_RESOURCE, _attributes(RESOURCE_ATTRIBUTES, resource.attributes, cache))


def _scope(scope: InstrumentationScope | None, cache: Cache) -> bytes:
    if scope is None:
        return _field(SCOPE_SPANS_SCOPE, b"")
    found = [_text(SCOPE_NAME, scope.name) if scope.name else b"",
             _text(SCOPE_VERSION, scope.version) if scope.version else b"",
             _attributes(SCOPE_ATTRIBUTES, scope.attributes, cache)]
    return _field(SCOPE_SPANS_SCOPE, b"".join(found))


class _Group:
    """One `ResourceSpans`: its resource and, per scope, the encoded spans."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.scopes: list[tuple[InstrumentationScope | None, list[bytes]]] = []

    def spans_of(self, scope: InstrumentationScope | None) -> list[bytes]:
        for known, spans in self.scopes:
            if known == scope:
                return spans
        spans = []
        self.scopes.append((scope, spans))
        return spans

    def encode(self, cache: Cache) -> bytes:
        found = [_resource(self.resource, cache)]
        for scope, spans in self.scopes:
            body = [_scope(scope, cache), *(_field(SCOPE_SPANS_SPANS, s) for s in spans)]
            if scope is not None and scope.schema_url:
                body.append(_text(SCOPE_SPANS_SCHEMA, scope.schema_url))
            found.append(_field(RESOURCE_SPANS_SCOPE_SPANS, b"".join(body)))
        if self.resource.schema_url:
            found.append(_text(RESOURCE_SPANS_SCHEMA, self.resource.schema_url))
        return _field(REQUEST_RESOURCE_SPANS, b"".join(found))


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """The OTLP `ExportTraceServiceRequest` of `spans`, serialised: the message the SDK's
    `encode_spans` makes."""
    cache: Cache = {}
    groups: list[_Group] = []
    seen: dict[tuple[int, int], list[bytes]] = {}  # by the objects' identity: no hashing per span
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        key = (id(resource), id(scope))
        into = seen.get(key)
        if into is None:
            group = next((g for g in groups if g.resource == resource), None)
            if group is None:
                group = _Group(resource)
                groups.append(group)
            into = seen[key] = group.spans_of(scope)
        into.append(_span(span, cache))
    return b"".join(g.encode(cache) for g in groups)


class OtlpExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, sending `encode`'s bytes."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client, metrics = getattr(self, "_client", None), getattr(self, "_metrics", None)
        limit = getattr(self, "_max_request_size", None)
        if client is None or metrics is None or limit is None or self._shutdown:
            return super().export(spans)  # another SDK version's exporter, or shut down (it says so)
        data = encode(spans)
        if 0 < limit < len(data):  # the SDK's own limit: its export logs the drop and counts it
            return super().export(spans)
        with metrics.export_operation(len(spans)) as result:
            sent = client.export(data)
            if not sent.success:
                result.error = sent.error
                code = sent.status_code
                result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: code} if code is not None else None
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


__all__ = ["OtlpExporter", "encode"]
