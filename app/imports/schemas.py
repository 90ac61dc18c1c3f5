"""What GET /architectures answers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TimmFamilies(BaseModel):
    count: int = Field(description="architectures timm builds")
    families: list[str] = Field(description="their name prefixes (resnet, efficientnet, vit, ...)")


class ArchitecturesOut(BaseModel):
    builtin: list[str] = Field(description="retain's own networks (source mlp | cnn | resnet18)")
    plugins: list[str] = Field(description="installed entry points of the group retain.architectures")
    torchvision: list[str] = Field(description="torchvision classification builders (source torchvision:<builder>)")
    timm: TimmFamilies = Field(description="timm architectures (source timm:<name>)")
    hf: str = Field(description="Hugging Face image classifiers and text (sequence) classifiers (source hf)")
