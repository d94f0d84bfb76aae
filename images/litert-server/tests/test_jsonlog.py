"""The JSON log format. litert_server/jsonlog.py and the event relay's event_relay/logs.py
are one file, copied (the images share no package), so the two images log alike: these
tests are in both images, and the last one checks that the two files are still the same.

DELIBERATE COPY: this file is images/event-relay/tests/test_logs.py under the LiteRT server's
names. Each image is a separately shipped package whose own suite tests the copy it ships, so
the tests are copied with the module; edit both."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from litert_server import jsonlog

HERE = Path(__file__).resolve().parents[1]
THIS = HERE / "src" / "litert_server/jsonlog.py"
OTHER = HERE.parent / "event-relay" / "src" / "event_relay/logs.py"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.setFormatter(jsonlog.JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


def _logger(name: str = "edgeai.test") -> tuple[logging.Logger, Capture]:
    log = logging.getLogger(name)
    capture = Capture()
    log.handlers[:] = [capture]
    log.setLevel(logging.DEBUG)
    log.propagate = False
    return log, capture


def test_a_line_is_time_level_logger_msg_then_the_extra_fields_sorted() -> None:
    log, capture = _logger()
    log.warning("model %s loaded", "m", extra={"version": 3, "model": "m", "accelerator": "cpu"})
    (line,) = capture.lines
    assert "\n" not in line
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", "msg", "accelerator", "model", "version"]
    assert entry["level"] == "warning" and entry["logger"] == "edgeai.test" and entry["msg"] == "model m loaded"
    assert (entry["accelerator"], entry["model"], entry["version"]) == ("cpu", "m", 3)


def test_time_is_iso_8601_utc_with_milliseconds() -> None:
    log, capture = _logger()
    log.info("x")
    stamp = json.loads(capture.lines[0])["time"]
    assert len(stamp) == len("2026-12-01T10:00:00.123Z") and stamp.endswith("Z")
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert 0 <= capture.records[0].created - parsed.timestamp() < 0.001 + 1e-6


def test_fields_helper_and_extra_give_the_same_fields() -> None:
    log, capture = _logger()
    log.info("a", extra=jsonlog.fields(type="deploy", ready=True))
    log.info("a", extra={"type": "deploy", "ready": True})
    first, second = (json.loads(line) for line in capture.lines)
    first.pop("time")
    second.pop("time")
    assert first == second == {"level": "info", "logger": "edgeai.test", "msg": "a", "ready": True, "type": "deploy"}


def test_an_extra_field_never_replaces_a_fixed_one() -> None:
    log, capture = _logger()
    log.info("real", extra=jsonlog.fields(time="fake", logger="fake", level="fake", msg="fake", exc="fake"))
    entry = json.loads(capture.lines[0])
    assert entry["msg"] == "real" and entry["level"] == "info" and entry["logger"] == "edgeai.test"
    assert entry["time"] != "fake" and "exc" not in entry
    assert {entry[f"field_{key}"] for key in ("time", "logger", "level", "msg", "exc")} == {"fake"}


def test_an_exception_is_one_line_with_its_traceback_in_exc() -> None:
    log, capture = _logger()
    try:
        1 / 0  # noqa: B018 - the exception is the point
    except ZeroDivisionError:
        log.exception("failed", extra={"path": Path("/v2/models")})
    (line,) = capture.lines
    assert "\n" not in line
    entry = json.loads(line)
    assert list(entry)[-1] == "exc" and "ZeroDivisionError" in entry["exc"]
    assert entry["level"] == "error" and entry["path"] == "/v2/models"  # not JSON: its str()


def test_setup_writes_to_stderr_from_the_level_up(capsys) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        jsonlog.setup("warning")
        logging.getLogger("edgeai.setup").info("not shown")
        logging.getLogger("edgeai.setup").error("shown")
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert json.loads(line)["msg"] == "shown"


def test_this_module_and_the_other_images_copy_are_the_same_file() -> None:
    assert Path(jsonlog.__file__).resolve() == THIS
    assert THIS.read_bytes() == OTHER.read_bytes(), (
        f"{THIS} and {OTHER} differ: they are one logging module, deliberately copied into both images; "
        "make the same change in both"
    )
    assert "DELIBERATE COPY" in THIS.read_text().split('"""')[1]
