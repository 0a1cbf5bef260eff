"""The readable table printed at the end of a run."""

from __future__ import annotations

from typing import Any


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: ""}[passed]


def table(result: dict[str, Any], sections: list[str]) -> str:
    lines: list[str] = []
    head = f"{'figure':<48} {'value':>12} {'unit':<11} {'baseline':>12} {'ratio':>8}  goal"
    for name in sections:
        section = result.get(name)
        if section is None:
            continue
        lines.append("")
        seconds = section.get("seconds")
        took = f" ({seconds:.0f} s)" if seconds is not None else ""
        lines.append(f"== {name}: {section.get('description', '')}{took}")
        if "error" in section:
            lines.append(f"   ERROR: {section['error']}")
            continue
        if "skipped" in section:
            lines.append(f"   skipped: {section['skipped']}")
            continue
        if "peer_table" in section:
            lines.append(section["peer_table"])
            skipped = section.get("raw", {}).get("nodered_skipped")
            if skipped:
                lines.append(f"   Node-RED skipped: {skipped}")
            lines.append("")
        lines.append(head)
        baselines: dict[str, None] = {}
        for fig in section["figures"]:
            baselines.setdefault(fig["baseline_name"])
            target = fig["goal"]["text"] if fig["goal"] else ""
            lines.append(
                f"{fig['name']:<48} {_number(fig['value']):>12} {fig['unit']:<11}"
                f" {_number(fig['baseline']):>12} {_number(fig['ratio']):>8}"
                f"  {_verdict(fig['pass']):<4} {target}".rstrip()
            )
        lines.append("   baseline: " + "; ".join(baselines))
    return "\n".join(lines)
