"""Messages that workers post to the UI thread (workers never touch widgets)."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from appliance.importer import ImportResult
from appliance.mediascan import Medium
from appliance.rollback import RollbackResult
from appliance.verify import RecordStatus
from tui.model import Problem, Review, RollbackPreview


class MediaScanned(Message):
    """A poll of the media found something different from the last one."""

    def __init__(self, media: list[Medium], statuses: dict[str, str]) -> None:
        super().__init__()
        self.media = media
        self.statuses = statuses  # bundle path -> the core's claimed status (new, imported...)


class HomeData(Message):
    """The trust summary and latest events, read in a worker (never on the UI thread)."""

    def __init__(self, summary: Any, log: Any, problem: Problem | None) -> None:
        super().__init__()
        self.summary = summary
        self.log = log
        self.problem = problem


class ReviewReady(Message):
    def __init__(self, review: Review) -> None:
        super().__init__()
        self.review = review


class ImportProgress(Message):
    """Bytes hashed so far of one artifact (throttled by the sender)."""

    def __init__(self, name: str, done: int, size: int) -> None:
        super().__init__()
        self.name = name
        self.done = done
        self.size = size


class ImportFinished(Message):
    def __init__(self, result: ImportResult | None, problem: Problem | None) -> None:
        super().__init__()
        self.result = result
        self.problem = problem


class VerifyFinished(Message):
    def __init__(self, status: RecordStatus | None, problem: Problem | None) -> None:
        super().__init__()
        self.status = status
        self.problem = problem


class RollbackPreviewed(Message):
    def __init__(self, preview: RollbackPreview) -> None:
        super().__init__()
        self.preview = preview


class RollbackFinished(Message):
    def __init__(self, result: RollbackResult | None, problem: Problem | None) -> None:
        super().__init__()
        self.result = result
        self.problem = problem
