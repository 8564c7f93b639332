"""The prompt catalog: what each prompt id says, in Mandarin and optionally English."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

PromptKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
# What a per-line prompt's text may quote, filled in for each line that plays it.
PROMPT_FIELDS = ("line", "line_name", "department")


class Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zh: str = Field(description="Mandarin text; {line}, {line_name}, {department} are filled in")
    en: str | None = None
    transition: bool = Field(
        default=False, description="a retired line's transition prompt (reported as such)"
    )
    per_line: bool = Field(
        default=False, description="rendered once per line because its text names the line"
    )


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: dict[PromptKey, Prompt]

    _transition: frozenset[str] = PrivateAttr(default=frozenset())

    def model_post_init(self, context: object, /) -> None:
        # Asked for every prompt of every call; a loaded catalog never changes.
        self._transition = frozenset(
            pid for pid, prompt in self.prompts.items() if prompt.transition
        )

    def transition_ids(self) -> frozenset[str]:
        return self._transition
