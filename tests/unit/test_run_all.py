"""benchmarks/run_all.py: JSON extraction, the marker rewriting of RESULTS.md, machine info, and a whole run with
tiny fake benchmark scripts (real subprocesses; no real benchmark runs)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


ra = _load()


# --- JSON extraction ----------------------------------------------------------------------------------------


def test_last_json_of_several_lines_and_prefix():
    text = 'start {not json\n{"a": 1}\nRESULT {"b": {"c": [1, 2]}, "d": "x{y}"}\ntrailing text\n'
    assert ra.extract_last_json(text) == {"b": {"c": [1, 2]}, "d": "x{y}"}


def test_last_json_multiline_indented_then_text():
    obj = {"ratio": 0.91, "nested": {"k": [1, {"z": None}]}, "s": "}"}
    text = "[log] {oops}\n" + json.dumps({"first": True}) + "\n" + json.dumps(obj, indent=2) + "\nratio 0.91 goal\n"
    assert ra.extract_last_json(text) == obj


def test_result_key_picks_the_result_and_keeps_later_objects_as_extras(tmp_path):
    script = tmp_path / "train.py"
    script.write_text('import json\nprint(json.dumps({"ratio_ray_over_plain": 0.95, "plain_median": 2.0}))\n'
                      'print(json.dumps({"device": "GPU X", "mode": "train", "clips_per_s": 12.5}))\n')
    bench = ra.Benchmark("bench_train", script, result_key="ratio_ray_over_plain",
                         headline_keys=("ratio_ray_over_plain",))
    rec = ra.run_benchmark(bench, tmp_path / "out", quick=False, timeout=60)
    assert rec.ok and rec.result == {"ratio_ray_over_plain": 0.95, "plain_median": 2.0}
    assert rec.extras == [{"device": "GPU X", "mode": "train", "clips_per_s": 12.5}]
    block = ra.render_block(ra.machine_info(gpu=False), [rec], [], [bench], False, tmp_path)
    assert "ratio_ray_over_plain = 0.95" in block and '"device": "GPU X"' in block


def test_last_json_none_and_non_object():
    assert ra.extract_last_json("no json here {at all\n[1, 2]\n") is None
    assert ra.extract_last_json("") is None


# --- marker rewriting ---------------------------------------------------------------------------------------


COMMENTARY = "\n## Models (registry, CPU)\n\nHand   written\ttext, trailing spaces  \r\n| a | b |\n\n```\nx\n```\n \t\n\n"


def test_markers_inserted_at_top_and_commentary_kept_byte_for_byte():
    out = ra.replace_block(COMMENTARY, "GEN 1\n")
    assert out.startswith("# Benchmark results\n\n" + ra.BEGIN + "\nGEN 1\n" + ra.END + "\n")
    assert out.endswith(COMMENTARY)
    again = ra.replace_block(out, "GEN 2 longer\nline\n")
    assert "GEN 1" not in again and "GEN 2 longer\nline\n" + ra.END in again
    assert again.endswith(COMMENTARY)
    assert again.count(ra.BEGIN) == 1 and again.count("# Benchmark results") == 1


def test_existing_title_reused_and_text_around_markers_untouched():
    before = "# Benchmark results\nintro para\n\n"
    after = "\n\n## Serving\nfigures 1.534 \u00e9\n"
    text = before + ra.BEGIN + "\nold\n" + ra.END + after
    out = ra.replace_block(text, "new")
    assert out == before + ra.BEGIN + "\nnew\n" + ra.END + after
    fresh = ra.replace_block("# Benchmark results\n## Serving\n", "g")
    assert fresh == "# Benchmark results\n\n" + ra.BEGIN + "\ng\n" + ra.END + "\n\n## Serving\n"


@pytest.mark.parametrize("bad", [
    "<!-- run_all:begin -->\nx\n",
    "<!-- run_all:end -->\n<!-- run_all:begin -->\n",
    "<!-- run_all:begin -->\n<!-- run_all:end -->\n<!-- run_all:begin -->\n<!-- run_all:end -->\n",
])
def test_unbalanced_markers_refused(bad):
    with pytest.raises(ValueError, match="markers"):
        ra.replace_block(bad, "x")


# --- machine info ---------------------------------------------------------------------------------------------


def test_machine_info_fields():
    m = ra.machine_info(gpu=False)
    assert m["cores"] == os.cpu_count()
    assert m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert len(m["load_average"]) == 3 and all(x >= 0 for x in m["load_average"])
    assert m["memory_gib"] is None or m["memory_gib"] > 0
    import importlib.metadata

    assert m["ray"] == importlib.metadata.version("ray")
    assert m["torch"] == importlib.metadata.version("torch")
    assert m["cpu"] and m["os"] and m["gpu"] == "not probed"


# --- a whole run with fake benchmarks -------------------------------------------------------------------------


def _script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def test_run_all_with_fake_benchmarks(tmp_path):
    good = _script(tmp_path / "fake_models.py", """
        import json, sys
        print("table line")
        rows = [{"model": "m", "batch": b, "infer_clips_per_cpu_s": 10.0 * b, "infer_clips_per_s_wall": 5.0 * b,
                 "train_clips_per_cpu_s": float(b)} for b in (1, 2, 4)]
        print(json.dumps({"first": 1}))
        print(json.dumps({"clip": "laptop", "threads": 1, "rows": rows, "argv": sys.argv[1:]}, indent=1))
        print("done")
    """)
    serve = _script(tmp_path / "fake_serve.py", """
        import json
        runs = [{"streams": n, "ok": n < 4, "frame_to_score_s": {"p50": 0.1 * n, "p95": 0.2 * n}} for n in (1, 2, 4)]
        print("RESULT " + json.dumps({"ratio": 0.9, "streams_sustained": 2, "stream_runs": runs,
                                      "frame_to_score_s": {"p50": 0.2, "p95": 0.4}}))
    """)
    prepare = _script(tmp_path / "fake_prepare.py", """
        import json
        print(json.dumps({"clips": 10, "ratio_stage": 0.85, "clips_written_1x": 10, "clips_written_4x": 40,
                          "peak_ray_mib_1x": 300.0, "peak_ray_mib_4x": 330.0, "peak_driver_mib_1x": 150.0,
                          "peak_driver_mib_4x": 151.0, "memory_ratio_4x_over_1x": 1.1}, indent=2))
        print("throughput ratio (Ray Data stage / bare decord): 0.85  goal >= 0.8")
    """)
    broken = _script(tmp_path / "fake_broken.py", """
        import sys
        print("partial", flush=True)
        sys.exit("boom: cannot read the data folder")
    """)
    text_only = _script(tmp_path / "fake_text.py", """
        print("epoch 1")
        print("held-out accuracy 0.750 vs majority-class baseline 0.500")
    """)
    benches = (
        ra.Benchmark("bench_models", good, full_args=("--full",), quick_args=("--quick",)),
        ra.Benchmark("bench_serve", serve, headline_keys=("ratio", "streams_sustained")),
        ra.Benchmark("bench_prepare", prepare, headline_keys=("ratio_stage", "memory_ratio_4x_over_1x")),
        ra.Benchmark("broken", broken),
        ra.Benchmark("textual", text_only, headline_pattern=r"^held-out accuracy .*$"),
    )
    results = tmp_path / "RESULTS.md"
    results.write_bytes(COMMENTARY.encode())
    out_dir, plot_dir = tmp_path / "out", tmp_path / "plots"
    records = ra.run_all(quick=True, benchmarks=benches, results=results, out_dir=out_dir, plot_dir=plot_dir,
                         timeout=120, gpu=False, progress=lambda s: None)

    by = {r.name: r for r in records}
    assert by["bench_models"].ok and by["bench_models"].result["argv"] == ["--quick"]
    assert by["bench_serve"].ok and by["bench_serve"].result["ratio"] == 0.9
    assert not by["broken"].ok and "exit status 1" in by["broken"].error and "boom" in by["broken"].error
    assert by["textual"].headlines == ["held-out accuracy 0.750 vs majority-class baseline 0.500"]
    assert "partial" in (out_dir / "broken.log").read_text()

    png = sorted(p.name for p in plot_dir.iterdir())
    assert png == ["memory_vs_dataset.png", "streams_vs_latency.png", "throughput_vs_batch.png"]
    assert all((plot_dir / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in png)

    text = results.read_bytes().decode()
    assert text.endswith(COMMENTARY)
    block = text[text.index(ra.BEGIN):text.index(ra.END)]
    assert "| broken | FAILED" in block and "boom: cannot read the data folder" in block
    assert "m batch 4: infer 40 clips/CPU-s" in block
    assert "ratio = 0.9" in block and "streams_sustained = 2" in block and "p50 0.2" in block
    assert "held-out accuracy 0.750" in block
    assert "ratio_stage = 0.85" in block and "memory_ratio_4x_over_1x = 1.1" in block
    assert "load average" in block and "--quick" in block
    assert "](plots/throughput_vs_batch.png)" in block

    # A second invocation of one benchmark keeps the others' earlier records and still the commentary.
    ra.run_all(only="textual", benchmarks=benches, results=results, out_dir=out_dir, plot_dir=plot_dir,
               timeout=120, gpu=False, progress=lambda s: None)
    text2 = results.read_bytes().decode()
    assert text2.endswith(COMMENTARY) and text2.count(ra.BEGIN) == 1
    assert "from an earlier invocation" in text2 and "ratio = 0.9" in text2

    # --render-only runs nothing (the logs stay as they were) and rebuilds the same records.
    logs = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.log")}
    results.write_bytes(COMMENTARY.encode())
    ra.run_all(render_only=True, benchmarks=benches, results=results, out_dir=out_dir, plot_dir=plot_dir,
               gpu=False, progress=lambda s: None)
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.log")} == logs
    text3 = results.read_bytes().decode()
    assert text3.endswith(COMMENTARY) and "ratio = 0.9" in text3 and "held-out accuracy 0.750" in text3

    with pytest.raises(SystemExit, match="unknown benchmark"):
        ra.run_all(only="nope", benchmarks=benches, results=results, out_dir=out_dir, plot_dir=plot_dir, gpu=False)


def test_timeout_recorded_as_failure(tmp_path):
    slow = _script(tmp_path / "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(30)\n")
    rec = ra.run_benchmark(ra.Benchmark("slow", slow), tmp_path / "out", quick=False, timeout=2)
    assert not rec.ok and "timed out after 2 s" in rec.error


def test_registered_arguments_exist_in_each_script():
    """Every flag run_all passes (full and quick) is one the benchmark's argparse declares."""
    import re

    for bench in ra.BENCHMARKS:
        source = bench.script.read_text()
        declared = set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", source))
        assert declared, bench.script
        passed = {a for a in bench.full_args + bench.quick_args if a.startswith("--")}
        assert passed <= declared, (bench.name, sorted(passed - declared))
