"""The services table.

Revision ID: 0001
Revises:
Create Date: 2024-11-23

Types are spelled out here rather than imported from the models: a
migration must keep creating the schema it created the day it shipped.
"""

from __future__ import annotations

import datetime
from typing import TypedDict

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


class _MySQLOptions(TypedDict, total=False):
    mysql_charset: str
    mysql_collate: str


def _timestamp() -> sa.types.TypeEngine[datetime.datetime]:
    # MySQL's plain DATETIME drops microseconds.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _mysql_options() -> _MySQLOptions:
    """utf8mb4 with a binary collation: host names are compared exactly
    ('Node1' and 'node1' are two hosts), as on PostgreSQL and SQLite."""
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return {}
    if getattr(bind.dialect, "is_mariadb", False):
        collation = "utf8mb4_nopad_bin"  # also tells 'a' from 'a '
    elif (bind.dialect.server_version_info or ()) >= (8, 0, 17):  # known once connected
        collation = "utf8mb4_0900_bin"
    else:
        collation = "utf8mb4_bin"
    return {"mysql_charset": "utf8mb4", "mysql_collate": collation}


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("binary", sa.String(255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("report_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("disabled_reason", sa.String(255), nullable=True),
        sa.Column("forced_down", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", _timestamp(), nullable=True),
        sa.Column("updated_at", _timestamp(), nullable=True),
        sa.Column("last_seen_up", _timestamp(), nullable=True),
        sa.Column("deleted", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.UniqueConstraint("uuid", name="uniq_services0uuid"),
        sa.UniqueConstraint("host", "topic", "deleted", name="uniq_services0host0topic0deleted"),
        **_mysql_options(),
    )
    op.create_index("ix_services_topic_deleted", "services", ["topic", "deleted"])


def downgrade() -> None:
    op.drop_index("ix_services_topic_deleted", table_name="services")
    op.drop_table("services")
