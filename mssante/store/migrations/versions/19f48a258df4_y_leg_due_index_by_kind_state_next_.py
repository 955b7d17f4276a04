"""y_leg: due index by kind, state, next attempt

The Y worker looks legs up by kind and state (due MSSanté legs, due DMP legs, queued legs); the former
index (state, next_attempt_at) made each look-up read every leg of the other kind in that state too
(thousands of DMP legs waiting while the MSSanté ones were looked for).

Revision ID: 19f48a258df4
Revises: 3ec6ea37f0ad
Create Date: 2026-12-04 19:42:32.956170
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


revision: str = '19f48a258df4'
down_revision: str | None = '3ec6ea37f0ad'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('y_leg', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_y_leg_due'))
        batch_op.create_index('ix_y_leg_kind_due', ['kind', 'state', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('y_leg', schema=None) as batch_op:
        batch_op.drop_index('ix_y_leg_kind_due')
        batch_op.create_index(batch_op.f('ix_y_leg_due'), ['state', 'next_attempt_at'], unique=False)
