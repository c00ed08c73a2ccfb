import json

from core.bench import main


def test_bench_writes_every_figure(tiny_weights_env, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--models", "mobilenetv2-baseline", "--quick", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["device"] and res["versions"]["keras"]
    m = res["models"][0]
    for key in ("load_seconds", "single_image_latency", "throughput_images_per_s", "best_batch_size",
                "raw_model_predict_images_per_s", "app_batch_images_per_s", "gradcam",
                "upload_to_diagnosis_and_gradcam", "parameters", "weights_mb", "peak_rss_mb_after"):
        assert key in m, key
    assert m["single_image_latency"]["p95_ms"] >= m["single_image_latency"]["p50_ms"] > 0
    assert m["parameters"] > 2_000_000 and m["weights_mb"] > 1


def test_bench_without_weights_is_a_plain_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEUKOSCOPE_WEIGHTS", str(tmp_path))
    assert main(["--models", "vgg19-tl", "--out", str(tmp_path / "b.json")]) == 0
    assert "skipped vgg19-tl" in capsys.readouterr().err
