"""The built-in modules, by the name `[modules] enabled` uses."""

from __future__ import annotations

from modules.builtin.echo import EchoModule
from modules.builtin.summarize import SummarizeModule
from modules.sdk import Module

BUILTINS: dict[str, type[Module]] = {
    EchoModule.name: EchoModule,
    SummarizeModule.name: SummarizeModule,
}
