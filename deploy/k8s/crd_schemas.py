"""Turn CustomResourceDefinitions into the strict JSON schemas kept in deploy/k8s/schemas.

``python -m deploy.k8s.crd_schemas CRD.yaml...`` writes one
``<group>_<kind>_<version>.json`` per served version. The tests validate the
rendered CloudNativePG, cert-manager and Prometheus operator objects against
these files, with no cluster and no network. Refresh them from the operators'
CRDs (schemas/SOURCES.md says which) when moving to a newer operator.

The OpenAPI v3 subset becomes JSON Schema: ``nullable`` and
``x-kubernetes-int-or-string`` turn into type unions; objects reject unknown
fields unless the CRD preserves them (as ``kubectl --validate=strict`` and the
API server's field validation do); descriptions, defaults and CEL rules, which
do not change what is accepted here, are dropped to keep the files small;
``status`` is dropped since manifests never set it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
_DROPPED = {"description", "default", "example", "externalDocs"}


def convert(node: Any) -> Any:
    """One OpenAPI v3 (structural) schema node as JSON Schema."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {name: convert(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = convert(value) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [convert(child) for child in value]
        elif key == "nullable":
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}, *out.get("anyOf", [])]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and "properties" in out and not preserve:
        out.setdefault("additionalProperties", False)
    return out


def schemas_of(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name -> JSON schema for each served version of one CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    found: dict[str, dict[str, Any]] = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        root = dict(version["schema"]["openAPIV3Schema"])
        properties = dict(root.get("properties", {}))
        properties.pop("status", None)
        properties["apiVersion"] = {"const": f"{group}/{version['name']}"}
        properties["kind"] = {"const": kind}
        properties["metadata"] = {"type": "object"}
        root["properties"] = properties
        schema = convert(root)
        schema["required"] = sorted({"apiVersion", "kind", "metadata", *root.get("required", [])})
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        found[f"{group}_{kind}_{version['name']}.json".lower()] = schema
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CRD YAML -> strict JSON schema")
    parser.add_argument("crds", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=SCHEMAS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.crds:
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in schemas_of(document).items():
                text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
                (args.out / name).write_text(text + "\n")
                print(f"{path.name} -> {args.out / name} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
