"""The record schema: published JSON Schema, validation on every write, version upgrades."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from matdx.store.licenses import LicenseError, normalize_license
from matdx.store.models import Record, RecordElement
from matdx.store.records import (
    SCHEMA_VERSION,
    RecordSchemaError,
    upgrade_document,
    validate_document,
)
from matdx.store.schema import publish, record_json_schema, schema_file_name, schema_text
from tests.store.factory import document

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schema"


def test_published_schema_is_what_the_models_generate():
    published = DOCS / schema_file_name()
    assert published.is_file(), "run `python -m matdx.store.schema docs/schema`"
    assert published.read_text(encoding="utf-8") == schema_text()
    schema = record_json_schema()
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    governance = schema["$defs"]["Governance"]["properties"]
    assert governance["access"]["enum"] == ["private", "group", "embargoed", "public"]


def test_publish_writes_the_versioned_file(tmp_path):
    path = publish(tmp_path)
    assert path.name == f"record-v{SCHEMA_VERSION}.json"
    assert path.read_text(encoding="utf-8") == schema_text()


def v1_document() -> dict:
    """A record as matdx wrote them before schema v2 (licence as free text, "" for none)."""
    old = document(license=None)
    old["schema_version"] = 1
    old["governance"]["license"] = ""
    return old


def test_v1_documents_upgrade_to_the_current_version():
    old = v1_document()
    new = upgrade_document(old)
    assert old["schema_version"] == 1 and old["governance"]["license"] == ""  # not modified
    assert new["schema_version"] == SCHEMA_VERSION and new["governance"]["license"] is None
    assert validate_document(new).record_id == old["record_id"]

    free_text = v1_document()
    free_text["governance"]["license"] = "internal use only"
    assert upgrade_document(free_text)["governance"]["license"] == "LicenseRef-internal-use-only"
    spdx = v1_document()
    spdx["governance"]["license"] = "cc-by-4.0"
    assert upgrade_document(spdx)["governance"]["license"] == "CC-BY-4.0"

    endless = v1_document()
    endless["governance"]["access"] = "embargoed"  # v1 allowed an embargo without an end
    upgraded = upgrade_document(endless)
    assert upgraded["governance"]["access"] == "group"
    validate_document(upgraded)


def test_unknown_versions_are_refused_with_the_known_ones():
    for version, message in ((0, "no upgrade from version 0"), (99, "no upgrade from version 99")):
        old = v1_document()
        old["schema_version"] = version
        with pytest.raises(RecordSchemaError, match=message):
            upgrade_document(old)
    with pytest.raises(RecordSchemaError, match="schema_version: expected an integer"):
        upgrade_document({"record_id": "x"})


def test_validation_names_every_bad_field():
    bad = document()
    bad["governance"]["access"] = "secret"
    bad["results"]["energy"] = "low"
    with pytest.raises(RecordSchemaError) as caught:
        validate_document(bad)
    message = str(caught.value)
    assert (
        "governance.access: Input should be 'private', 'group', 'embargoed' or 'public'" in message
    )
    assert "results.energy" in message
    endless = document()
    endless["governance"]["access"] = "embargoed"
    with pytest.raises(RecordSchemaError, match="needs embargo_until"):
        validate_document(endless)


def test_licences_are_spdx_expressions():
    assert normalize_license("mit OR cc-by-4.0") == "MIT OR CC-BY-4.0"
    assert normalize_license("LicenseRef-lab-internal") == "LicenseRef-lab-internal"
    assert normalize_license("  ") is None
    for bad, why in (("Foo-1.0", "unknown SPDX identifier"), ("MIT AND", "not an SPDX")):
        with pytest.raises(LicenseError, match=why):
            normalize_license(bad)
    with pytest.raises(RecordSchemaError, match=r"governance\.license"):
        validate_document({**document(), "governance": {"license": "Foo-1.0"}})


def test_invalid_records_are_refused_on_write_and_nothing_is_written(store):
    good, bad = document(), document()
    bad["governance"]["access"] = "secret"
    with pytest.raises(RecordSchemaError, match=r"governance\.access"), store.transaction() as s:
        s.execute(insert(Record), [{"document": good}, {"document": bad}])
    with pytest.raises(RecordSchemaError, match="schema_version"), store.transaction() as s:
        s.execute(insert(Record), [{"document": v1_document()}])  # writes are current only
    with pytest.raises(RecordSchemaError, match="validated"), store.transaction() as s:
        s.execute(insert(Record).values(document=good, record_id="x"))
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Record)) == 0
        assert session.scalar(select(func.count()).select_from(RecordElement)) == 0
