"""Virtual keys: random, shown once, stored only as a SHA-256 hash.

The keys are 256-bit random strings, so a fast hash is enough: there is nothing to brute-force
that a slow hash would protect (slow hashes are for low-entropy passwords).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from metering.tables import ApiKeyPublic, ApiKeyRecord, MetaRecord

KEY_PREFIX = "tm-"
_GENERATION = "keys_generation"
_GENERATION_QUERY = sa_select(col(MetaRecord.value)).where(col(MetaRecord.name) == _GENERATION)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the proxy needs to know about a valid key on the request path."""

    id: str
    user: str
    team: str | None
    use_case: str | None
    agent: str | None
    service: bool = False  # may attribute usage to the end users it declares


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    engine: Engine,
    *,
    user: str,
    team: str | None = None,
    use_case: str | None = None,
    agent: str | None = None,
    service: bool = False,
) -> tuple[ApiKeyPublic, str]:
    """Create a key; returns its public record and the key itself (the only time it is seen)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        id="key_" + secrets.token_hex(8),
        key_hash=hash_key(key),
        prefix=key[:10],
        user=user,
        team=team,
        use_case=use_case,
        agent=agent,
        service=service,
        created_at=datetime.now(UTC),
    )
    with Session(engine) as session:
        session.add(record)
        _bump_generation(session)
        session.commit()
        session.refresh(record)
        return ApiKeyPublic.model_validate(record, from_attributes=True), key


def list_keys(engine: Engine) -> list[ApiKeyPublic]:
    with Session(engine) as session:
        rows = session.exec(select(ApiKeyRecord).order_by(col(ApiKeyRecord.created_at))).all()
        return [ApiKeyPublic.model_validate(r, from_attributes=True) for r in rows]


def revoke_key(engine: Engine, key_id: str) -> bool:
    """Revoke ``key_id``; False if there is no such active key."""
    with Session(engine) as session:
        result = session.exec(
            update(ApiKeyRecord)
            .where(col(ApiKeyRecord.id) == key_id, col(ApiKeyRecord.revoked_at).is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        if not result.rowcount:
            return False
        _bump_generation(session)
        session.commit()
        return True


def load_active_keys(engine: Engine) -> tuple[int, dict[str, KeyInfo]]:
    """All active keys by hash, with the generation they were read at."""
    with Session(engine) as session:
        generation = _read_generation(session)
        rows = session.exec(
            select(ApiKeyRecord).where(col(ApiKeyRecord.revoked_at).is_(None))
        ).all()
        return generation, {r.key_hash: _info(r) for r in rows}


def find_active_key(engine: Engine, digest: str) -> KeyInfo | None:
    """The active key with this hash, by one lookup on the unique ``key_hash`` index."""
    with Session(engine) as session:
        row = session.exec(
            select(ApiKeyRecord).where(
                col(ApiKeyRecord.key_hash) == digest, col(ApiKeyRecord.revoked_at).is_(None)
            )
        ).first()
        return _info(row) if row is not None else None


def read_generation(engine: Engine) -> int:
    """The keys generation, by one Core query: every proxy process polls it a few times a
    second, where an ORM session's identity map and object loading cost ten times the query."""
    with engine.connect() as conn:
        value = conn.execute(_GENERATION_QUERY).scalar()
    return int(value) if value is not None else 0


def _info(record: ApiKeyRecord) -> KeyInfo:
    return KeyInfo(
        record.id, record.user, record.team, record.use_case, record.agent, record.service
    )


def _read_generation(session: Session) -> int:
    row = session.get(MetaRecord, _GENERATION)
    return row.value if row else 0


def _bump_generation(session: Session) -> None:
    row = session.get(MetaRecord, _GENERATION, with_for_update=True)
    if row is None:
        session.add(MetaRecord(name=_GENERATION, value=1))
    else:
        row.value += 1
        session.add(row)
