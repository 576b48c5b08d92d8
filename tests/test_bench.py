"""vlm/experiments/benchmarks.py (ceiling, training step, FLOPs, memory, our model against its peer) and scripts/bench.py."""

import json
import time

import pytest
import torch
from helpers import text_batch, tiny_model, tiny_tokenizer
from torch import nn

from vlm.cli.bench import main
from vlm.experiments.benchmarks import (
    LiveTensorBytes,
    alternating_seconds,
    compare_speed,
    count_step,
    format_ceiling,
    format_steps,
    matmul_gflops,
    matmul_peak,
    measure_training_step,
    model_matmul_shapes,
)
from vlm.model.config import get_preset
from vlm.training.loop import TrainConfig, build_optimizer

PAIRS = [(None, "a red circle"), ("what color is the circle?", "red"), (None, "two blue squares above a green star")]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_flops_of_a_two_layer_step_match_the_analytic_count():
    batch, a, b, c = 8, 16, 32, 4
    model = nn.Sequential(nn.Linear(a, b), nn.Linear(b, c))
    inputs = torch.randn(batch, a)

    def step():
        model(inputs).sum().backward()

    flops, _ = count_step(step, list(model.parameters()))
    # Forward 2ab + 2bc per row; backward: both weight gradients, and the input gradient of the second layer only
    # (nothing asks for the gradient of the inputs).
    assert flops == batch * (2 * a * b + 2 * b * c + 2 * a * b + 2 * b * c + 2 * b * c)


def test_live_tensor_bytes_counts_a_storage_once_and_drops_it_when_freed():
    with LiveTensorBytes() as memory:
        first = torch.ones(1000)  # 4000 bytes
        second = first * 2
        view = second[:10]  # no new storage
        del first
        third = second + 1
    assert memory.peak == 8000
    assert memory.live == 8000
    del second, third
    assert memory.live == 4000  # the view keeps the second tensor's storage alive
    del view
    assert memory.live == 0


def test_a_training_step_costs_about_three_forward_passes(tokenizer):
    model = tiny_model(tokenizer).train()
    batch = text_batch(tokenizer, model.config, PAIRS)
    forward, _ = count_step(lambda: model(**batch), [])
    step = measure_training_step(model, build_optimizer(model, TrainConfig()), batch, repeats=1)
    # Backward is twice the forward for every product, except the input gradient of the patch projection.
    assert 2.8 * forward < step.flops <= 3 * forward


def test_step_measurement_counts_weights_optimizer_state_and_activations(tokenizer):
    model = tiny_model(tokenizer).train()
    batch = text_batch(tokenizer, model.config, PAIRS)
    step = measure_training_step(model, build_optimizer(model, TrainConfig()), batch, repeats=2)
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert step.peak_bytes > 4 * weight_bytes  # weights, gradients and AdamW's two moments, plus activations
    assert step.batch_size == 3 and step.text_tokens == int(batch["attention_mask"].sum())
    assert step.images_per_s == pytest.approx(3 / step.seconds)
    assert step.gflops == pytest.approx(step.flops / step.seconds / 1e9)


def test_alternating_timing_calls_the_functions_in_turn_and_takes_each_ones_median():
    calls = []
    ticks = {"fast": 0.0, "slow": 0.02}

    def timed(name):
        def run():
            calls.append(name)
            time.sleep(ticks[name])

        return run

    seconds = alternating_seconds({"fast": timed("fast"), "slow": timed("slow")}, repeats=3, device=torch.device("cpu"))
    assert calls == ["fast", "slow"] * 4  # one warm-up round, then three timed rounds
    assert seconds["slow"] >= 0.02 > seconds["fast"]


def test_a_slow_matrix_multiply_is_measured_on_fewer_rows():
    gflops, rows = matmul_gflops(256, 32, 32, torch.float32)
    assert rows == 256 and gflops > 0
    _, rows = matmul_gflops(4096, 32, 32, torch.float32, max_call_s=1e-9)
    assert rows == 64  # the probe's size: never fewer rows than that


def test_matmul_shapes_follow_the_config():
    config = get_preset("default")
    shapes = {name: (rows, inner, cols) for name, rows, inner, cols in model_matmul_shapes(config, 2, 10)}
    assert shapes["vision MLP"] == (2 * 16, 128, 512)  # 16 patches of a 64-pixel image
    assert shapes["decoder MLP"] == (2 * (16 + 10), 256, 256)  # the preset's MLP is as wide as its stream


def test_speed_comparison_measures_both_models_and_their_ratios(tokenizer):
    config = get_preset("tiny")
    batch = text_batch(tokenizer, config, PAIRS)
    comparison = compare_speed(
        "tiny",
        config,
        tokenizer,
        batch,
        TrainConfig(dtype="float32"),
        "cpu",
        [1],
        new_tokens=2,
        repeats=1,
        ceiling_dtypes=["float32"],
    )
    report = comparison.to_dict()
    assert report["ours"]["step"]["parameters"] == pytest.approx(report["peer"]["step"]["parameters"], rel=0.02)
    assert report["ratios"]["images_per_s"] == pytest.approx(
        report["ours"]["step"]["images_per_s"] / report["peer"]["step"]["images_per_s"]
    )
    peer_ms, our_ms = (report[m]["generation"][0]["ms_cache"] for m in ("peer", "ours"))
    assert report["ratios"]["generation_batch_1_cache"] == pytest.approx(peer_ms / our_ms)
    assert (
        0
        < report["ours"]["step"]["share_of_ceiling"]
        == pytest.approx(report["ours"]["step"]["gflops"] / report["ceiling_gflops"]["float32"])
    )


def test_bench_help_describes_both_comparisons(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--budget-s" in text and "--skip-budget" in text and "wall-clock" in text


@pytest.mark.parametrize(
    "argv, message",
    [(["--presets", "huge"], "unknown preset 'huge'"), (["--budget-s", "0"], "--budget-s and --check-every-s")],
)
def test_bench_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_tiny_run_prints_the_tables_and_writes_the_json_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(
        ["--presets", "tiny", "--data", "easy_vqa", "--batch-size", "4", "--generation-batch-sizes", "1", "2"]
        + ["--new-tokens", "3", "--repeats", "1", "--budget-preset", "tiny", "--budget-s", "0.4"]
        + ["--check-every-s", "0.2", "--check-samples", "4", "--test-limit", "4"]
        + ["--out", str(out), "--device", "cpu"]
    )
    printed = capsys.readouterr().out
    for title in ("matrix multiply", "training step", "generation, ms per caption", "same wall-clock budget"):
        assert title in printed
    report = json.loads(out.read_text())
    assert report["machine"]["training_dtype"] in ("float32", "bfloat16")
    [speed] = report["speed"]
    assert {s["dtype"] for s in speed["ceiling"]} == {"float32", "bfloat16"}
    assert [t["batch_size"] for t in speed["peer"]["generation"]] == [1, 2]
    assert set(speed["ratios"]) >= {"images_per_s", "generation_batch_1_cache", "generation_batch_2_cache"}
    runs = report["budget"]["runs"]
    assert [run["model"] for run in runs] == ["ours", "peer"]
    for run in runs:
        assert run["steps"] > 0 and run["checks"] and set(run["test"]) == {"easy_vqa_accuracy", "caption_cider"}
        assert "seconds_to_target" in run


def test_the_peak_is_one_large_square_per_dtype_and_mfu_divides_by_it(tokenizer):
    peak = matmul_peak(["float32"], "cpu")
    assert [(s.name, s.dtype, s.inner, s.cols) for s in peak] == [("square 2048", "float32", 2048, 2048)]
    config = get_preset("tiny")
    batch = text_batch(tokenizer, config, PAIRS)
    comparison = compare_speed(
        "tiny", config, tokenizer, batch, TrainConfig(dtype="float32"), "cpu", [1], 2, 1, ["float32"], peak=peak
    )
    step = comparison.to_dict()["ours"]["step"]
    assert 0 < step["share_of_peak"] == pytest.approx(step["gflops"] / peak[0].gflops)
    assert "of peak" in format_steps([comparison]) and "square 2048" in format_ceiling([comparison])
