from __future__ import annotations

from event_relay.monitor import parse_prometheus, summarize_models

METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="resnet",version="1"} 10
nv_inference_request_failure{model="resnet",version="1"} 2
nv_inference_count{model="resnet",version="1"} 40
nv_inference_request_duration_us{model="resnet",version="1"} 24000
nv_inference_request_success{model="tiny",version="3"} 0
nv_gpu_utilization{gpu_uuid="x"} 0.5
"""


def test_parse_prometheus():
    samples = parse_prometheus(METRICS)
    assert ("nv_inference_count", {"model": "resnet", "version": "1"}, 40.0) in samples
    assert ("nv_gpu_utilization", {"gpu_uuid": "x"}, 0.5) in samples


def test_summary_and_deltas():
    models, state = summarize_models(METRICS)
    resnet = next(m for m in models if m["model"] == "resnet")
    assert resnet["request_success"] == 10 and resnet["request_failure"] == 2
    assert resnet["inference_count"] == 40 and resnet["avg_request_latency_us"] == 2000.0
    tiny = next(m for m in models if m["model"] == "tiny")
    assert tiny["version"] == "3" and tiny["avg_request_latency_us"] is None
    later = METRICS.replace("} 10", "} 14").replace("} 24000", "} 26000")
    models, _ = summarize_models(later, state)
    resnet = next(m for m in models if m["model"] == "resnet")
    assert resnet["request_success_delta"] == 4 and resnet["interval_avg_request_latency_us"] == 500.0
