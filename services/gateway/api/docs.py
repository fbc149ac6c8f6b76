"""A browsable page of the OpenAPI document: plain HTML rendered here, no scripts."""

from __future__ import annotations

import json
from html import escape
from typing import Any

_METHODS = ("get", "post", "put", "patch", "delete")
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "code,pre{background:#f4f4f4;padding:.1rem .3rem}pre{padding:.6rem;overflow:auto}"
    "h2{border-bottom:1px solid #ccc}.m{font-weight:bold;text-transform:uppercase}"
)


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return str(schema.get("type", "object"))


def render(document: dict[str, Any]) -> str:
    info = document.get("info", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(info.get('title', 'API'))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} {escape(info.get('version', ''))}</h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        "<p>The machine-readable document: <a href='/openapi.json'>/openapi.json</a>.</p>",
    ]
    for path, operations in document.get("paths", {}).items():
        for method in _METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            parts.append(
                f"<h2><span class='m'>{method}</span> <code>{escape(path)}</code></h2>"
                f"<p>{escape(operation.get('summary', ''))}</p>"
            )
            security = operation.get("security")
            if security:
                parts.append(f"<p>Security: <code>{escape(json.dumps(security))}</code></p>")
            for parameter in operation.get("parameters", []):
                parts.append(
                    f"<p>{escape(parameter['in'])} <code>{escape(parameter['name'])}</code>"
                    f"{' (required)' if parameter.get('required') else ''}: "
                    f"{escape(parameter.get('description', ''))}</p>"
                )
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                example = content.get("example")
                if example is None:
                    examples = content.get("schema", {})
                    example = None if not isinstance(examples, dict) else examples.get("example")
                parts.append(
                    f"<p>Body <code>{escape(media)}</code>: "
                    f"{escape(_schema_name(content.get('schema', {})))}</p>"
                )
                if example is not None:
                    parts.append(f"<pre>{escape(json.dumps(example, indent=2))}</pre>")
            for status, response in operation.get("responses", {}).items():
                media = ", ".join(response.get("content", {}).keys())
                contents: list[dict[str, Any]] = list(response.get("content", {}).values())
                schema = contents[0].get("schema", {}) if contents else {}
                parts.append(
                    f"<p><b>{escape(str(status))}</b> {escape(response.get('description', ''))}"
                    f" {escape(media)} {escape(_schema_name(schema) if schema else '')}</p>"
                )
    parts.append("<h2>Schemas</h2>")
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        parts.append(
            f"<h3 id='{escape(name)}'>{escape(name)}</h3>"
            f"<pre>{escape(json.dumps(schema, indent=2, ensure_ascii=False))}</pre>"
        )
    parts.append("</body></html>")
    return "".join(parts)
