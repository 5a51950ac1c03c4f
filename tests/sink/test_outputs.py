"""The sink's output interface: one failing output is counted and logged once, and the
others (and the sink) go on."""

from __future__ import annotations

import json
import logging

from prometheus_client import CollectorRegistry, Counter

from common import wire
from services.sink.events import events_output
from services.sink.outputs import Output, OutputSet, OutputUnavailable, SinkResult
from tests.reliability.helpers import valid_result


class FullDisk(Output):
    """An output whose every write fails the way a full disk does."""

    name = "webhook"

    def write(self, result):
        raise OSError(28, "No space left on device")


class NotHere(Output):
    """An output that cannot work on this machine."""

    name = "display"

    def open(self):
        raise OutputUnavailable("no display here; continuing without a window")


def _result(seq: int) -> SinkResult:
    return SinkResult(wire.decode(valid_result(seq=seq)), latency_s=0.1, t_sink_ns=seq)


def test_a_failing_output_is_counted_logged_once_and_isolated(tmp_path, caplog):
    # given events.jsonl next to an output that always fails and one that is unavailable
    registry = CollectorRegistry()
    errors = Counter("agegender_sink_output_errors_total", "x", ["output"], registry=registry)
    outputs = OutputSet([FullDisk(), NotHere(), events_output(tmp_path / "events.jsonl")],
                        errors)
    outputs.open()
    # when 3 frames are written
    with caplog.at_level(logging.WARNING):
        for seq in range(3):
            outputs.write(_result(seq))
    outputs.close()
    # then every frame reached events.jsonl
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [0, 1, 2]
    # and the failures are counted per output, logged once, the unavailable one left out
    count = registry.get_sample_value
    assert count("agegender_sink_output_errors_total", {"output": "webhook"}) == 3
    assert count("agegender_sink_output_errors_total", {"output": "events"}) == 0
    assert [o.name for o in outputs.outputs] == ["webhook", "events"]
    assert sum("webhook failed" in r.getMessage() for r in caplog.records) == 1
    assert "no display here" in caplog.text
