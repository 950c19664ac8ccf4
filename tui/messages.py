"""Messages that workers post to the UI thread (workers never touch widgets)."""

from __future__ import annotations

from textual.message import Message

from appliance.importer import ImportResult
from appliance.rollback import RollbackResult
from appliance.verify import RecordStatus
from tui.mediascan import MediaInfo
from tui.model import Problem, Review, RollbackPreview


class MediaScanned(Message):
    """A poll of the media found something different from the last one."""

    def __init__(self, media: list[MediaInfo]) -> None:
        super().__init__()
        self.media = media


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
