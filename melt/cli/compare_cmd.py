"""``melt compare`` and ``melt history``: regression verdicts and trends.

``melt compare`` exits 3 when a compared cell's baseline and current jobs
carry different labels (unless ``--allow-mixed-labels``), 2 when a regression
is found, 0 otherwise, 1 on errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from melt.cli.common import console as make_console
from melt.cli.common import echo_json, json_option, results_option, results_path
from melt.errors import LabelsDiffer, RegressionFound
from melt.store.runs import ResultsStore


def _floors(values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for v in values:
        name, sep, pct = v.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = float(pct) / 100
        except ValueError:
            raise click.BadParameter(f"{v!r}: use METRIC=PERCENT, e.g. decode_tps=3",
                                     param_hint="--floor") from None
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1%}"


_STYLE = {"regression": "bold red", "improvement": "green", "inconclusive": "yellow",
          "missing": "dim", "unchanged": ""}


def _print_table(result, show_all: bool) -> None:
    """One block per cell (its label, then a table of its metrics): readable at 80 columns."""
    from rich.table import Table
    from rich.text import Text

    from melt.analysis.metrics import format_value

    console = make_console()
    console.print(f"baseline: {result.baseline}\ncurrent:  {result.current}\n"
                  f"test: {result.test} (one-sided, alpha {result.alpha:g})")
    counts: dict[str, int] = {}
    cell_counts: dict[str, int] = {}
    for cell in result.cells:
        cell_counts[cell.status] = cell_counts.get(cell.status, 0) + 1
        if cell.status != "compared":
            if show_all or cell.status == "incomparable":  # a gate must see what it did not judge
                console.print(Text.assemble("\n", (cell.label, "bold"), ": ", (cell.status, "dim"),
                                            (f" ({cell.note})" if cell.note else "", "dim")))
            continue
        table = Table("metric", "baseline", "current", "change", "p", "floor", "verdict")
        table.columns[0].overflow = table.columns[6].overflow = "fold"
        for m in cell.metrics:
            counts[m.verdict] = counts.get(m.verdict, 0) + 1
            if not show_all and m.verdict in ("unchanged", "missing"):
                continue
            table.add_row(m.metric, format_value(m.metric, m.baseline_median),
                          format_value(m.metric, m.current_median), _pct(m.change),
                          "–" if m.p_value is None else f"{m.p_value:.3g}", f"{m.floor:.0%}",
                          Text(m.verdict + (f" ({m.note})" if m.note else ""), style=_STYLE.get(m.verdict, "")))
        if table.rows or cell.labels_differ:
            console.print(Text("\n" + cell.label, style="bold"))
            if cell.labels_differ:
                console.print(Text(f"warning: {cell.labels_warning}", style="bold yellow"))
            if cell.note:
                console.print(Text(cell.note, style="dim"))
            if table.rows:
                console.print(table)
    cells = ", ".join(f"{n} {k}" for k, n in sorted(cell_counts.items()))
    metrics = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none compared"
    console.print(f"{len(result.cells)} cells ({cells}); metrics: {metrics}")


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--history", "history_n", type=click.IntRange(min=1), default=None,
              help="Compare CURRENT_RUN with the last N earlier runs of each cell (from the index).")
@click.option("--metric", "metrics", multiple=True,
              help="Metric to compare (repeatable; `all` for every metric with a direction). "
                   "Default: prefill/decode tok/s, TTFT, J/token, peak memory.")
@click.option("--floor", "floor_args", multiple=True, metavar="METRIC=PERCENT",
              help="Minimum effect for METRIC, in percent (repeatable).")
@click.option("--default-floor", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Minimum effect in percent for metrics without --floor.")
@click.option("--alpha", type=click.FloatRange(min=0, max=1, min_open=True), default=0.05,
              show_default=True, help="Significance level of the one-sided test.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write JUnit XML here (one test case per cell).")
@click.option("--all", "show_all", is_flag=True, help="Show unchanged metrics too.")
@click.option("--allow-mixed-labels", is_flag=True,
              help="Judge cells whose baseline and current jobs carry different labels (simulated, "
                   "synthetic, emulated, stand-in) without exit code 3; the warning stays.")
@json_option
@results_option
def compare(runs: tuple[str, ...], history_n: int | None, metrics: tuple[str, ...],
            floor_args: tuple[str, ...], default_floor: float, alpha: float, junit_path: Path | None,
            show_all: bool, allow_mixed_labels: bool, as_json: bool, results_dir: Path | None) -> None:
    """Compare BASELINE_RUN CURRENT_RUN, or CURRENT_RUN with --history N.

    A metric regressed when the one-sided test is significant (Mann-Whitney U
    on repetitions for two runs, Welch's t-test against history) AND the
    median moved the wrong way by more than the floor.

    A cell whose baseline jobs carry other labels than its current jobs (a
    simulated baseline, a measured run) is judged with a warning line, and
    the exit code is 3 unless --allow-mixed-labels. Otherwise exit code 2
    when any cell regressed, 0 if none did, 1 on errors.
    """
    from melt.analysis.history import compare_history, compare_runs
    from melt.analysis.junit import to_junit
    from melt.analysis.metrics import DEFAULT_COMPARED

    if history_n is None and len(runs) != 2:
        raise click.UsageError("give BASELINE_RUN CURRENT_RUN, or --history N CURRENT_RUN")
    if history_n is not None and len(runs) != 1:
        raise click.UsageError("with --history give only CURRENT_RUN")
    store = ResultsStore(results_path(results_dir))
    kw = dict(metrics=list(metrics) or list(DEFAULT_COMPARED), floors=_floors(floor_args),
              default_floor=default_floor / 100, alpha=alpha,
              names=[*metrics, *_floors(floor_args)])
    if history_n is None:
        result = compare_runs(store, runs[0], runs[1], **kw)
    else:
        result = compare_history(store, runs[0], history_n, **kw)
    if junit_path:
        junit_path.write_text(to_junit(result, mixed_fails=not allow_mixed_labels), encoding="utf-8")
    if as_json:
        echo_json(result.as_dict())
    else:
        _print_table(result, show_all)
    for line in result.warnings:  # on stderr too: a --json or --junit gate must see it in its log
        click.echo(line, err=True)
    if result.mixed and not allow_mixed_labels:
        found = f"; {len(result.regressions)} regression(s) found" if result.regressed else ""
        raise LabelsDiffer(f"{len(result.mixed)} cell(s) compare jobs with different labels{found}: "
                           "not a like-for-like comparison (--allow-mixed-labels judges them anyway)")
    if result.regressed:
        cells = {c.cell_id for c, _ in result.regressions}
        raise RegressionFound(f"{len(result.regressions)} regression(s) in {len(cells)} cell(s)")


@click.command()
@click.option("--metric", required=True, help="Metric name, e.g. decode_tps.")
@click.option("--device", help="Only this device.")
@click.option("--framework", help="Only this framework.")
@click.option("--model", help="Only this model.")
@click.option("--workload", help="Only this workload.")
@click.option("--cell", "cell_id", help="Only this cell id.")
@click.option("--last", "last_n", type=click.IntRange(min=1), help="Only the last N runs of each cell.")
@click.option("--floor", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Smallest level change to report, in percent.")
@click.option("--min-size", type=click.IntRange(min=1), default=3, show_default=True,
              help="Fewest runs on each side of a change.")
@json_option
@results_option
def history(metric: str, device: str | None, framework: str | None, model: str | None,
            workload: str | None, cell_id: str | None, last_n: int | None, floor: float,
            min_size: int, as_json: bool, results_dir: Path | None) -> None:
    """Show METRIC over time per cell (median of repetitions per run) and where it changed."""
    from rich.table import Table
    from rich.text import Text

    from melt.analysis.history import history_steps, metric_history, params_text
    from melt.analysis.regress import labels_word
    from melt.labels import parse_labels
    from melt.analysis.metrics import format_value
    from melt.errors import ResultsError

    store = ResultsStore(results_path(results_dir))
    hist = metric_history(store, metric, device=device, framework=framework, model=model,
                          workload=workload, cell_id=cell_id, last_n=last_n)
    if hist.empty:
        raise ResultsError(f"no ok job with metric '{metric}' matches in {store.root}/ "
                           "(check --device/--model/--framework, or run `melt results reindex`)")
    steps = history_steps(hist, metric, min_size=min_size, floor=floor / 100)
    if as_json:
        echo_json({"metric": metric,
                   "history": json.loads(hist.to_json(orient="records")),
                   "steps": json.loads(steps.to_json(orient="records"))})
        return
    console = make_console()
    marks = {(s.cell_id, s.run_id): s for s in steps.itertuples()}
    for cell, g in hist.groupby("cell_id", sort=False):
        first = g.iloc[0]
        kinds = list(dict.fromkeys(str(v or "") for v in g["labels"]))
        tags = f" ({kinds[0].replace(',', ', ')})" if len(kinds) == 1 and kinds[0] else ""
        console.print(Text(f"\n{first['device']}{tags} / {first['framework']} / {first['model']} / "
                           f"{first['workload']} ({params_text(first['params'])})  [cell {cell}]",
                           style="bold"))
        mixed = len(kinds) > 1
        if mixed:  # a level change between such runs may be the labels', not the code's
            console.print(Text("warning: the runs of this cell carry different labels ("
                               + "; ".join(labels_word(parse_labels(k)) for k in kinds)
                               + "): compare a level change with its runs' labels", style="bold yellow"))
        table = Table("run", "created (UTC)", *(["labels"] if mixed else []), "n", metric, "min – max",
                      "change")
        table.columns[0].no_wrap = True
        for r in g.itertuples():
            s = marks.get((cell, r.run_id))
            change = Text("")
            if s is not None:
                change = Text(f"{'▼' if s.change < 0 else '▲'} {s.change:+.1%} (p={s.p_value:.2g})",
                              style="bold red" if s.worse else "green")
            label_cell = [labels_word(parse_labels(r.labels)).replace(", ", ",")] if mixed else []
            table.add_row(r.run_id, str(r.created_at or "")[:19], *label_cell, str(r.n),
                          format_value(metric, r.median),
                          f"{format_value(metric, r.min)} – {format_value(metric, r.max)}", change)
        console.print(table)
    console.print(f"{hist['cell_id'].nunique()} cells, {len(steps)} level change(s) over {floor:g}%")
