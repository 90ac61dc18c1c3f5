"""Request and answer bodies of /keys: the secret appears only in the answer to its creation."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.auth.scopes import Scope


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"scope": "train", "name": "ci"}]})

    scope: Scope
    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f]+$",
        description="what the key is for (printable characters)",
    )


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    scope: Scope
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="the secret: shown this once, stored only as its SHA-256")
