"""JUnit XML for ``melt compare --junit``: one test case per compared cell.

CI systems (GitLab, Jenkins, GitHub test reporters) show a failed case per
regressed cell, a skipped case per cell without a baseline, and the numbers
of every metric in the case's output. A case's name carries its cell's
labels (``simulated``, ``stand-in`` ...) and its properties ``labels`` and
``baseline_labels``; a cell whose baseline carries other labels than its
current jobs has a ``warning`` property and fails as ``labels-differ``
(unless the caller allows it), and the suite has a ``warning`` property.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from melt.analysis.metrics import format_value
from melt.analysis.regress import Comparison, MetricVerdict, labels_word


def verdict_line(m: MetricVerdict) -> str:
    """``decode_tps: 20.1 -> 18.0 (-10.4%, p=0.004, mannwhitney): regression``."""
    change = f"{m.change:+.1%}" if m.change is not None else "n/a"
    p = f"p={m.p_value:.3g}" if m.p_value is not None else "p=n/a"
    text = (f"{m.metric}: {format_value(m.metric, m.baseline_median)} -> "
            f"{format_value(m.metric, m.current_median)} ({change}, {p}, {m.test}, "
            f"floor {m.floor:.0%}): {m.verdict}")
    return text + (f" - {m.note}" if m.note else "")


def to_junit(result: Comparison, suite_name: str = "melt compare", *, mixed_fails: bool = True) -> str:
    """The comparison as a JUnit XML document (UTF-8 text, escaped by ElementTree).

    ``mixed_fails``: a cell whose labels differ between baseline and current
    is a failed case (``labels-differ``); when False it only has the warning.
    """
    failures = sum(1 for c in result.cells if c.regressions or (mixed_fails and c.labels_differ))
    skipped = sum(1 for c in result.cells if c.status != "compared")
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(result.cells)),
                       failures=str(failures), errors="0", skipped=str(skipped))
    props = ET.SubElement(suite, "properties")
    for k, v in (("baseline", result.baseline), ("current", result.current), ("mode", result.mode),
                 ("test", result.test), ("alpha", f"{result.alpha:g}"),
                 ("labels_differ", len(result.mixed))):
        ET.SubElement(props, "property", name=k, value=str(v))
    if result.mixed:
        ET.SubElement(props, "property", name="warning",
                      value=f"{len(result.mixed)} cell(s) compare jobs with different labels: "
                            "not a like-for-like comparison")
    for cell in result.cells:
        ident = cell.identity
        classname = ".".join(str(ident.get(k) or "-") for k in ("device", "framework", "model"))
        case = ET.SubElement(suite, "testcase", classname=classname,
                             name=f"{cell.label} [{cell.cell_id}]", time="0")
        cprops = ET.SubElement(case, "properties")
        ET.SubElement(cprops, "property", name="labels", value=labels_word(cell.current_labels))
        ET.SubElement(cprops, "property", name="baseline_labels", value=labels_word(cell.baseline_labels))
        warning = [f"warning: {cell.labels_warning}"] if cell.labels_differ else []
        if warning:
            ET.SubElement(cprops, "property", name="warning", value=cell.labels_warning)
        if cell.status != "compared":
            ET.SubElement(case, "skipped", message=f"{cell.status}: {cell.note or 'nothing to compare with'}")
        elif cell.regressions or (mixed_fails and warning):
            lines = warning + [verdict_line(m) for m in cell.regressions]
            fail = ET.SubElement(case, "failure", type="regression" if cell.regressions else "labels-differ",
                                 message="; ".join(lines)[:1000])
            fail.text = "\n".join(lines)
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(warning + [f"params: {ident.get('params')}"]
                             + [verdict_line(m) for m in cell.metrics])
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
