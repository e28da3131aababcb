"""Export one JSON Schema (draft 2020-12) per record, so producers in any language can
validate what they write. Rules that depend on the clock (no timestamps beyond now + the
allowed skew) cannot be expressed in JSON Schema; docs/contract.md lists them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from schemas.records import RECORDS, SCHEMA_VERSION, Record

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(record: type[Record]) -> dict[str, Any]:
    schema = record.model_json_schema(mode="validation")
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"https://recq.dev/schemas/v{SCHEMA_VERSION}/{record.record_name}.schema.json",
        **schema,
    }


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<record_name>.schema.json`` for every record into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for record in RECORDS:
        path = directory / f"{record.record_name}.schema.json"
        path.write_bytes(
            orjson.dumps(json_schema(record), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
            + b"\n"
        )
        written.append(path)
    return written
