"""The reporting side of ``speed.py``: figures derived from the records, and the markdown tables."""

from __future__ import annotations

from _common import fmt, markdown_table

#: The configuration with the paper's settings, which the ratios compare every preset with.
FAITHFUL = "faithful"


# --------------------------------------------------------------------------------------
# Derived figures and the summary
# --------------------------------------------------------------------------------------


def _ok(record: dict) -> bool:
    return record.get("status") == "ok"


def _peak_mib(record: dict) -> float | None:
    peak = record.get("memory", {}).get("peak", {})
    return peak.get("gpu_peak_allocated_mib", peak.get("cpu_peak_rss_mib"))


def sweep_ratios(sweep: list[dict]) -> list[dict]:
    """Faithful / preset: time to result, seconds per iteration, peak memory."""
    faithful = {(r["device"], r["size"], r["kernel"]): r for r in sweep if r["config"] == FAITHFUL and _ok(r)}
    ratios = []
    for record in sweep:
        reference = faithful.get((record["device"], record["size"], record["kernel"]))
        if reference is None or not _ok(record) or record is reference:
            continue
        if record.get("same_measurement_as"):  # e.g. quality is faithful up to 512 px
            continue
        peaks = _peak_mib(reference), _peak_mib(record)
        ratios.append(
            {
                "device": record["device"],
                "size": record["size"],
                "kernel": record["kernel"],
                "config": record["config"],
                "faithful_time_to_result_s": reference["time_to_result_s"],
                "config_time_to_result_s": record["time_to_result_s"],
                "time_to_result_kinds": [
                    reference["time_to_result_kind"],
                    record["time_to_result_kind"],
                ],
                "time_to_result_ratio": reference["time_to_result_s"] / record["time_to_result_s"],
                "seconds_per_iteration_ratio": reference["seconds_per_iteration"] / record["seconds_per_iteration"],
                "peak_memory_ratio": peaks[0] / peaks[1] if all(peaks) else None,
            }
        )
    return ratios


def switch_comparisons(records: list[dict]) -> list[dict]:
    """One row per (device, config, switch): seconds per iteration off and on."""
    rows: dict[tuple, dict] = {}
    for record in records:
        key = (record["device"], record["config"], record["switch"])
        row = rows.setdefault(key, dict(zip(("device", "config", "switch"), key)))
        row["note"] = record["note"]
        row[f"{record['state']}_seconds_per_iteration"] = record.get("seconds_per_iteration") if _ok(record) else None
        if record["state"] == "on" and _ok(record) and "compile_overhead_s" in record:
            row["compile_overhead_s"] = record["compile_overhead_s"]
        if not _ok(record):
            row[f"{record['state']}_error"] = record.get("error", record.get("reason"))
    for row in rows.values():
        off, on = (
            row.get("off_seconds_per_iteration"),
            row.get("on_seconds_per_iteration"),
        )
        row["speedup"] = off / on if off and on else None
    return list(rows.values())


def _status(record: dict) -> str:
    if _ok(record):
        same = record.get("same_measurement_as")
        return f"ok (= {same})" if same else "ok"
    return f"{record['status']}: {record.get('error', record.get('reason', ''))}"


def _display(record: dict) -> dict:
    """``record`` with the derived cells the tables show."""
    region = record.get("region")
    return {
        **record,
        "window": f"{region[2]}x{region[3]}" if region else None,
        "peak_mib": _peak_mib(record),
        "status_text": _status(record) if "status" in record else None,
    }


# Table columns: (header, record key, format spec or None for text).
SWEEP_COLUMNS = [
    ("device", "device", None),
    ("config", "config", None),
    ("size", "size", None),
    ("kernel", "kernel", None),
    ("blind-fit window", "window", None),
    ("s / it", "seconds_per_iteration", ".3g"),
    ("to result (s)", "time_to_result_s", ".4g"),
    ("kind", "time_to_result_kind", None),
    ("peak MiB", "peak_mib", ".0f"),
    ("status", "status_text", None),
]
RATIO_COLUMNS = [
    ("device", "device", None),
    ("size", "size", None),
    ("kernel", "kernel", None),
    ("config", "config", None),
    ("time to result", "time_to_result_ratio", ".3g"),
    ("s / it", "seconds_per_iteration_ratio", ".3g"),
    ("peak memory", "peak_memory_ratio", ".3g"),
]
SWITCH_COLUMNS = [
    ("device", "device", None),
    ("config", "config", None),
    ("switch", "switch", None),
    ("off s / it", "off_seconds_per_iteration", ".3g"),
    ("on s / it", "on_seconds_per_iteration", ".3g"),
    ("off / on", "speedup", ".3g"),
    ("compile s", "compile_overhead_s", ".3g"),
    ("note", "note", None),
]
STACK_COLUMNS = [
    ("device", "device", None),
    ("mode", "mode", None),
    ("warm start", "warm_start", None),
    ("planes", "planes", None),
    ("size", "size", None),
    ("s", "elapsed_s", ".4g"),
    ("planes / min", "planes_per_minute", ".3g"),
    ("peak MiB", "peak_mib", ".0f"),
    ("status", "status_text", None),
]
KERNEL_STEP_COLUMNS = [
    ("device", "device", None),
    ("size", "size", None),
    ("kernel", "kernel", None),
    ("Woodbury s / call", "seconds_per_call_woodbury", ".3g"),
    ("dense centring solve s (CPU)", "seconds_dense_centering_solve_cpu", ".3g"),
    ("status", "status_text", None),
]
TABLES = [
    ("sweep", "Sweep", SWEEP_COLUMNS),
    ("ratios", "Faithful / preset, same run (how many times faster, smaller)", RATIO_COLUMNS),
    ("switch_comparisons", "Speed switches, one at a time", SWITCH_COLUMNS),
    ("stack", "Stacks", STACK_COLUMNS),
    ("kernel_step", "Kernel step", KERNEL_STEP_COLUMNS),
]


def _table(records: list[dict], columns: list[tuple[str, str, str | None]]) -> list[str]:
    rows = []
    for record in map(_display, records):
        values = [record.get(key) for _, key, _ in columns]
        rows.append([fmt(v, spec) if spec else fmt(v, "") for v, (_, _, spec) in zip(values, columns)])
    return markdown_table([header for header, _, _ in columns], rows)


def markdown_summary(report: dict) -> str:
    """The report's tables in markdown, headed by the machines they were measured on."""
    lines = ["# Speed", ""]
    for device, machine in report["machines"].items():
        lines.append(
            f"- {device}: {machine['device']}; CPU {machine['cpu']} ({machine['torch_threads']} torch threads); "
            f"torch {machine['torch']}; {machine['date']}"
        )
    settings = report["settings"]
    if settings.get("width") or settings.get("config_iterations"):
        lines.append("- **debug overrides in force (--width / --config-iterations): these figures describe no preset**")
    for key, title, columns in TABLES:
        if report[key]:
            lines += ["", f"## {title}", "", *_table(report[key], columns)]
    return "\n".join(lines) + "\n"
