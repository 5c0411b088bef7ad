"""On PostgreSQL, the database itself refuses UPDATE and DELETE on the audit log."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION annotation_auditentry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'annotation_auditentry is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotation_auditentry_append_only
    BEFORE UPDATE OR DELETE ON annotation_auditentry
    FOR EACH ROW EXECUTE FUNCTION annotation_auditentry_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS annotation_auditentry_append_only ON annotation_auditentry;
DROP FUNCTION IF EXISTS annotation_auditentry_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0003_consensus_and_audit")]
    operations = [migrations.RunPython(forwards, backwards)]
