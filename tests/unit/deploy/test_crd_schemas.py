"""The CRD-to-JSON-schema conversion keeps what the API server would accept, and no more."""

from __future__ import annotations

import jsonschema

from deploy.k8s.crd_schemas import schemas_of

CRD = {
    "kind": "CustomResourceDefinition",
    "spec": {
        "group": "example.mamoru.io",
        "names": {"kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": "dropped",
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "free": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                        "properties": {"known": {"type": "string"}},
                                    },
                                    "mode": {"type": "string", "enum": ["a", "b"]},
                                },
                            },
                            "status": {"type": "object"},
                        },
                    }
                },
            },
            {"name": "v1beta1", "served": False, "schema": {"openAPIV3Schema": {}}},
        ],
    },
}


def widget(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "example.mamoru.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": spec,
    }


def validator() -> jsonschema.Draft202012Validator:
    (schema,) = schemas_of(CRD).values()
    return jsonschema.Draft202012Validator(schema)


def test_only_served_versions_become_schemas_named_by_group_kind_and_version():
    assert list(schemas_of(CRD)) == ["example.mamoru.io_widget_v1.json"]


def test_int_or_string_nullable_and_preserved_fields_accept_what_kubernetes_accepts():
    check = validator()
    assert check.is_valid(widget(size=3, note=None, free={"anything": [1]}, mode="a"))
    assert check.is_valid(widget(size="50%"))


def test_unknown_fields_wrong_enums_and_other_kinds_are_refused():
    check = validator()
    assert not check.is_valid(widget(size=1, colour="red"))
    assert not check.is_valid(widget(size=1, mode="c"))
    assert not check.is_valid(widget(note="missing size"))
    assert not check.is_valid({**widget(size=1), "kind": "Gadget"})
    assert not check.is_valid({**widget(size=1), "status": {}})
