#!/bin/sh
# Creates Temporal's two PostgreSQL databases and brings their schemas to this server version.
# Safe to run again (that is how an upgrade applies its schema changes).
set -eu
for db in temporal temporal_visibility; do
    dir=temporal
    [ "$db" = temporal_visibility ] && dir=visibility
    temporal-sql-tool --db "$db" create || true  # exists already on a re-run
    temporal-sql-tool --db "$db" setup-schema -v 0.0 || true
    temporal-sql-tool --db "$db" update-schema -d "/etc/temporal/schema/postgresql/v12/$dir/versioned"
done
