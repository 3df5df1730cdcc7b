"""The built-in modules, by the name `[modules] enabled` uses."""

from __future__ import annotations

from modules.builtin.echo import EchoModule
from modules.builtin.embed import EmbedModule
from modules.builtin.ocr import OcrModule
from modules.builtin.summarize import SummarizeModule
from modules.builtin.vad import VadModule
from modules.sdk import Module

BUILTINS: dict[str, type[Module]] = {
    EchoModule.name: EchoModule,
    SummarizeModule.name: SummarizeModule,
    VadModule.name: VadModule,
    OcrModule.name: OcrModule,
    EmbedModule.name: EmbedModule,
}
