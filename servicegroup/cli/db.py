"""``db-sync``: bring the records database to the schema's head.

The one command meant to create the records database: every command that
only reads or updates records refuses a database without the schema and
points here.
"""

from __future__ import annotations

import argparse

from servicegroup.cli.common import GroupCommand


class DbSync(GroupCommand):
    """Apply the records database migrations (creates the database if needed)."""

    creates_records = True

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from servicegroup.records import Records

        records = Records(self.settings(parsed_args).records_url, migrate=False)
        try:
            records.migrate()
            self.out(f"records database {records.url_redacted} is up to date")
        finally:
            records.dispose()
        return 0
