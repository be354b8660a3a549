"""`/docs`: the API reference, rendered on the server from the OpenAPI document.

Owns: turning `openapi_document()` into one self-contained HTML page (inline CSS, no
scripts, nothing fetched from elsewhere, so it works with no internet). For every
operation: method, path, summary, parameters, the request body schema as nested tables
(type, required, constraints, description), an example body built from the schema, a
curl command, and every response status with its schema; then every component schema.

Rules: everything from the document is HTML-escaped; `$ref`s become links to the schema's
section; nesting is shown to `MAX_DEPTH` levels, deeper ones link to their schema.
"""

from __future__ import annotations

import html
import json
from typing import Any

S = dict[str, Any]
MAX_DEPTH = 3
_CONSTRAINTS = (
    "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "minItems", "maxItems",
    "maxProperties", "pattern", "format",
)  # fmt: skip
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:70em;padding:1em 2em;color:#222}"
    "h2{border-top:2px solid #ddd;padding-top:1em}h3{margin-bottom:.3em}"
    "code,pre{background:#f4f4f4;border-radius:3px}pre{padding:.6em;overflow-x:auto}"
    "table{border-collapse:collapse;margin:.3em 0 .8em}td,th{border:1px solid #ddd;padding:3px 8px;"
    "vertical-align:top;text-align:left}.m{font-weight:bold;padding:2px 6px;border-radius:3px;"
    "background:#e8eefc}.req{color:#b00}nav a{margin-right:1em}"
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ref_name(schema: S) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _link(name: str) -> str:
    return f"<a href='#schema-{_e(name)}'>{_e(name)}</a>"


def _type(schema: S) -> str:
    """A short type label: `string`, `integer | null`, `"a" | "b"`, a schema link..."""
    name = _ref_name(schema)
    if name:
        return _link(name)
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return " | ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type(s) for s in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_e(k) for k in kind)
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_type(schema['items'])}"
    return _e(kind) if kind else "any"


def _constraints(schema: S) -> str:
    found = [f"{k}: <code>{_e(schema[k])}</code>" for k in _CONSTRAINTS if k in schema]
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, []):
            found += [f"{k}: <code>{_e(option[k])}</code>" for k in _CONSTRAINTS if k in option]
    if schema.get("additionalProperties") is False:
        found.append("no other fields")
    return ", ".join(found)


def _object_of(schema: S) -> S | None:
    """The object schema to expand under a row, if any (through nullable wrappers)."""
    if schema.get("type") == "object" and "properties" in schema:
        return schema
    for key in ("anyOf", "oneOf"):
        options: list[S] = schema.get(key, [])
        for option in options:
            if option.get("type") == "object" and "properties" in option:
                return option
    return None


def schema_table(schema: S, depth: int = 0) -> str:
    """A table of an object's properties (nested objects expanded), or one line for others."""
    name = _ref_name(schema)
    if name:
        return f"<p>Schema: {_link(name)}</p>"
    if "properties" not in schema:
        extra = _constraints(schema)
        desc = f" — {_e(schema['description'])}" if schema.get("description") else ""
        return f"<p>{_type(schema)}{' (' + extra + ')' if extra else ''}{desc}</p>"
    required = set(schema.get("required", ()))
    rows = []
    for prop, sub in schema["properties"].items():
        mark = " <span class='req'>required</span>" if prop in required else ""
        nested = _object_of(sub)
        inner = schema_table(nested, depth + 1) if nested and depth < MAX_DEPTH else ""
        examples = sub.get("examples")
        shown = f"<br>e.g. {', '.join(f'<code>{_e(x)}</code>' for x in examples[:8])}" if examples else ""
        rows.append(
            f"<tr><td><code>{_e(prop)}</code>{mark}</td><td>{_type(sub)}</td>"
            f"<td>{_constraints(sub)}</td><td>{_e(sub.get('description', ''))}{shown}{inner}</td></tr>"
        )
    head = f"<p>{_e(schema['description'])}</p>" if schema.get("description") else ""
    note = " Other fields are refused." if schema.get("additionalProperties") is False else ""
    return (
        f"{head}<table><tr><th>field</th><th>type</th><th>constraints</th><th>notes</th></tr>"
        + "".join(rows) + f"</table>{'<p>' + note.strip() + '</p>' if note else ''}"
    )


def example_of(schema: S, components: S, depth: int = 0) -> Any:
    """A small example value for `schema`: its own example, else built from required fields."""
    name = _ref_name(schema)
    if name:
        return example_of(components.get(name, {}), components, depth + 1) if depth < 6 else {}
    if "example" in schema:
        return schema["example"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [s for s in schema.get(key, []) if s.get("type") != "null"]
        if options:
            return example_of(options[0], components, depth + 1)
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: example_of(props[k], components, depth + 1) for k in schema.get("required", ()) if k in props}
    if kind == "array":
        return [example_of(schema.get("items", {}), components, depth + 1)]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1) or 1
    if kind == "boolean":
        return False
    return "Hello"


def _operation(method: str, path: str, op: S, components: S) -> str:
    anchor = f"op-{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
    parts = [f"<h3 id='{_e(anchor)}'><span class='m'>{_e(method.upper())}</span> <code>{_e(path)}</code></h3>",
             f"<p>{_e(op.get('summary', ''))}</p>"]
    if op.get("security") == []:
        parts.append("<p>No API key needed.</p>")
    params = op.get("parameters", [])
    if params:
        param_rows = "".join(
            f"<tr><td><code>{_e(p['name'])}</code>{' <span class=req>required</span>' if p.get('required') else ''}"
            f"</td><td>{_e(p['in'])}</td><td>{_type(p.get('schema', {}))}</td>"
            f"<td>{_constraints(p.get('schema', {}))}</td><td>{_e(p.get('description', ''))}</td></tr>"
            for p in params
        )
        parts.append("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th>"
                     f"<th>constraints</th><th>notes</th></tr>{param_rows}</table>")
    curl = f"curl -X {method.upper()} http://localhost:3000{path}"
    if op.get("security") != []:
        curl += ' \\\n  -H "Authorization: Bearer $UMG_API_KEY"'
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        example = json.dumps(example_of(body, components), indent=2)
        name = _ref_name(body)
        shown = components.get(name, body) if name else body
        parts.append(f"<h4>Request body{': ' + _link(name) if name else ''}</h4>" + schema_table(shown))
        parts.append(f"<p>Example body:</p><pre>{_e(example)}</pre>")
        curl += f" \\\n  -H 'Content-Type: application/json' \\\n  -d '{json.dumps(example_of(body, components))}'"
    parts.append(f"<pre>{_e(curl)}</pre>")
    rows: list[str] = []
    for status, response in op.get("responses", {}).items():
        kinds = []
        for media, content in response.get("content", {}).items():
            schema = content.get("x-event-schema") or content.get("schema", {})
            kinds.append(f"<code>{_e(media)}</code>: {_type(schema)}")
        rows.append(f"<tr><td>{_e(status)}</td><td>{_e(response.get('description', ''))}</td>"
                    f"<td>{'<br>'.join(kinds)}</td></tr>")
    parts.append("<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>body</th></tr>"
                 + "".join(rows) + "</table>")
    return "".join(parts)


def render_docs_page(doc: S) -> str:
    components: S = doc.get("components", {}).get("schemas", {})
    ops = [(m, p, op) for p, methods in doc["paths"].items() for m, op in methods.items()]
    nav = "".join(f"<a href='#schema-{_e(n)}'>{_e(n)}</a>" for n in components)
    sections = [_operation(m, p, op, components) for m, p, op in ops]
    schemas = []
    for name, schema in components.items():
        example = ""
        if schema.get("example") is not None:
            example = f"<p>Example:</p><pre>{_e(json.dumps(schema['example'], indent=2))}</pre>"
        schemas.append(f"<h3 id='schema-{_e(name)}'>{_e(name)}</h3>{schema_table(schema)}{example}")
    title = _e(doc.get("info", {}).get("title", "API"))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title} API reference</title>"
        f"<style>{_CSS}</style></head><body><h1>{title} API reference</h1>"
        "<p>Rendered from <a href='/openapi.json'>/openapi.json</a>. Authenticate with "
        "<code>Authorization: Bearer &lt;key&gt;</code> (or <code>x-api-key</code>). "
        "Errors use the OpenAI shape <code>{\"error\": {message, type, param, code}}</code>; "
        "<code>/v1/messages</code> uses Anthropic's.</p>"
        f"<h2>Operations</h2>{''.join(sections)}<h2>Schemas</h2><nav>{nav}</nav>{''.join(schemas)}"
        "</body></html>"
    )
