"""Evaluation reports through SacreBLEU's own classes.

Corpus BLEU, chrF (or chrF++) and TER with their signatures, for systems against one or
more references; the first system is the baseline the others are tested against (paired
bootstrap resampling or approximate randomization, as sacrebleu computes them).
Breakdowns: length ratio, BLEU by source length, the largest sentence-BLEU drops.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest

from nmt.reporting.figures import embedded, png, pyplot

BUCKETS = [(1, 10), (11, 20), (21, 30), (31, 10_000)]  # source words
DROPS_SHOWN = 10


@dataclass
class SystemResult:
    name: str
    scores: dict[str, float]  # metric name as sacrebleu prints it -> score
    p_values: dict[str, float] = field(default_factory=dict)  # vs the baseline
    ci: dict[str, float] = field(default_factory=dict)  # 95% half-width
    bleu_by_length: dict[str, float] = field(default_factory=dict)
    sentence_bleu: list[float] = field(default_factory=list)
    sys_len: int = 0
    ref_len: int = 0


@dataclass
class Report:
    systems: list[SystemResult]
    signatures: dict[str, str]
    test: str  # "bs", "ar" or "" (one system)
    drops: list[dict] = field(default_factory=list)  # the largest sentence-BLEU drops

    def to_dict(self) -> dict:
        return asdict(self)


def make_metrics(names: list[str], chrf_plus: bool) -> dict[str, object]:
    """sacrebleu metric objects by our names: bleu, chrf, ter."""
    makers = {"bleu": BLEU, "chrf": lambda: CHRF(word_order=2 if chrf_plus else 0), "ter": TER}
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}: choose from bleu, chrf, ter")
    return {name: makers[name]() for name in names}


def evaluate(
    systems: list[tuple[str, list[str]]],
    refs: list[list[str]],
    *,
    src: list[str] | None = None,
    metrics: tuple[str, ...] = ("bleu", "chrf", "ter"),
    chrf_plus: bool = False,
    test: str = "bs",
    samples: int = 0,
) -> Report:
    """systems: (name, hypotheses) with the baseline first; refs: one list per reference."""
    objects = make_metrics(list(metrics), chrf_plus)
    results, signatures = [], {}
    if len(systems) > 1:
        paired = PairedTest(systems, objects, references=refs, test_type=test, n_samples=samples)
        sigs, table = paired()
        signatures = {name: str(sig) for name, sig in sigs.items()}
        for row, (name, _) in enumerate(systems):
            result = SystemResult(name, {})
            for metric, column in table.items():
                if metric == "System":
                    continue
                cell = column[row]
                result.scores[metric] = cell.score
                if cell.p_value is not None:
                    result.p_values[metric] = cell.p_value
                if cell.ci is not None:
                    result.ci[metric] = cell.ci
            if systems[row][1] == systems[0][1] and row > 0:
                # identical outputs differ by nothing: sacrebleu's strict `>` count would
                # give 1 / (n + 1) here, which reads as significant; no difference is p = 1
                result.p_values = dict.fromkeys(result.p_values, 1.0)
            results.append(result)
    else:
        name, hyps = systems[0]
        result = SystemResult(name, {})
        for metric in objects.values():
            score = metric.corpus_score(hyps, refs)
            result.scores[score.name] = score.score
            signatures[score.name] = str(metric.get_signature())
        results.append(result)
        test = ""

    bleu = BLEU(effective_order=True)
    per_ref = list(zip(*refs, strict=True))  # the references of each sentence
    for result, (_, hyps) in zip(results, systems, strict=True):
        corpus = BLEU().corpus_score(hyps, refs)
        result.sys_len, result.ref_len = corpus.sys_len, corpus.ref_len
        result.sentence_bleu = [
            bleu.sentence_score(h, list(r)).score for h, r in zip(hyps, per_ref, strict=True)
        ]
        if src is not None:
            result.bleu_by_length = _bleu_by_length(hyps, refs, src)
    drops = _largest_drops(systems, results, refs, src) if len(systems) > 1 else []
    return Report(results, signatures, test, drops)


def _bleu_by_length(hyps: list[str], refs: list[list[str]], src: list[str]) -> dict[str, float]:
    out = {}
    for low, high in BUCKETS:
        rows = [i for i, s in enumerate(src) if low <= len(s.split()) <= high]
        if rows:
            label = f"{low}-{high}" if high < 10_000 else f"{low}+"
            picked = [[ref[i] for i in rows] for ref in refs]
            out[f"{label} ({len(rows)})"] = (
                BLEU().corpus_score([hyps[i] for i in rows], picked).score
            )
    return out


def _largest_drops(systems, results, refs, src) -> list[dict]:
    """Where the second system's sentence-BLEU fell most below the baseline's."""
    base, other = results[0].sentence_bleu, results[1].sentence_bleu
    order = sorted(range(len(base)), key=lambda i: other[i] - base[i])[:DROPS_SHOWN]
    (first, first_hyps), (second, second_hyps) = systems[:2]
    drops = []
    for i in (i for i in order if other[i] < base[i]):
        drop = {
            "line": i + 1,
            "drop": round(base[i] - other[i], 1),
            "source": src[i] if src else "",
        }
        drops.append(
            {**drop, "reference": refs[0][i], first: first_hyps[i], second: second_hyps[i]}
        )
    return drops


# ---- rendering ---------------------------------------------------------------------------


def render(report: Report, fmt: str) -> str:
    renderers = {"json": render_json, "text": render_text, "markdown": render_markdown}
    return {**renderers, "html": render_html}[fmt](report)


def render_json(report: Report) -> str:
    """The first system's BLEU, chrF and BLEU signature at the top, then everything."""
    first = report.systems[0].scores
    summary = {
        "bleu": first.get("BLEU"),
        "chrf": next((v for k, v in first.items() if k.startswith("chrF")), None),
        "ter": first.get("TER"),
        "signature": report.signatures.get("BLEU"),
    }
    # sacrebleu's paired tests give numpy scalars (p-values, intervals): plain numbers here
    plain = {"default": lambda value: value.item(), "indent": 2, "ensure_ascii": False}
    return json.dumps({**summary, **report.to_dict()}, **plain) + "\n"


def _table(report: Report) -> tuple[list[str], list[list[str]]]:
    metrics = list(report.systems[0].scores)
    header = ["system", *metrics, "len ratio", "hyp len", "ref len"]
    rows = []
    for r in report.systems:
        cells = [r.name]
        for m in metrics:
            cell = f"{r.scores[m]:.1f}"  # sacrebleu's own printed width
            if m in r.ci:
                cell += f" ± {r.ci[m]:.1f}"
            if m in r.p_values:
                cell += f" (p = {r.p_values[m]:.4f})"
            cells.append(cell)
        cells += [f"{r.sys_len / max(r.ref_len, 1):.3f}", str(r.sys_len), str(r.ref_len)]
        rows.append(cells)
    return header, rows


def render_text(report: Report) -> str:
    header, rows = _table(report)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]
    ]
    lines += [f"{name} signature: {sig}" for name, sig in report.signatures.items()]
    return "\n".join(lines) + "\n"


TESTS = {"bs": "paired bootstrap resampling", "ar": "approximate randomization"}


def render_markdown(report: Report) -> str:
    header, rows = _table(report)
    out = [_markdown_row(header), "|" + "---|" * len(header), *map(_markdown_row, rows)]
    out += ["", "Signatures:", ""] + [f"- {n}: `{s}`" for n, s in report.signatures.items()]
    if report.test:
        name = report.systems[0].name
        out += ["", f"p-values: {TESTS[report.test]} against the first system ({name})."]
    if buckets := [r for r in report.systems if r.bleu_by_length]:
        labels = list(buckets[0].bleu_by_length)
        out += ["", "BLEU by source length (words, sentences):", ""]
        out += [_markdown_row(["system", *labels]), "|" + "---|" * (len(labels) + 1)]
        for r in buckets:
            out.append(_markdown_row([r.name, *(f"{v:.1f}" for v in r.bleu_by_length.values())]))
    if report.drops:
        names = report.systems[1].name, report.systems[0].name
        out += ["", "Largest sentence-BLEU drops, {} vs {}:".format(*names), ""]
        for d in report.drops:
            texts = (
                f"{k}: {html.escape(str(v))}" for k, v in d.items() if k not in ("line", "drop")
            )
            out.append(f"- line {d['line']} (-{d['drop']}): " + " / ".join(texts))
    return "\n".join(out) + "\n"


def _markdown_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def render_html(report: Report) -> str:
    """A self-contained page: the table, signatures, pictures (embedded PNG), drops."""
    plt = pyplot()
    sigs = "".join(
        f"<li>{html.escape(n)}: <code>{html.escape(s)}</code></li>"
        for n, s in report.signatures.items()
    )
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for r in report.systems:
        ax.hist(r.sentence_bleu, bins=20, range=(0, 100), alpha=0.55, label=r.name)
    ax.set(xlabel="sentence BLEU", ylabel="sentences", title="Sentence-level BLEU distribution")
    ax.legend()
    pictures = embedded(png(fig), "Sentence-level BLEU")
    if with_buckets := [r for r in report.systems if r.bleu_by_length]:
        labels = list(with_buckets[0].bleu_by_length)
        fig, ax = plt.subplots(figsize=(8, 3.6))
        width = 0.8 / len(with_buckets)
        for k, r in enumerate(with_buckets):
            xs = [i + k * width for i in range(len(labels))]
            ax.bar(xs, list(r.bleu_by_length.values()), width, label=r.name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels)
        ax.set(xlabel="source length in words (sentences)", ylabel="BLEU")
        ax.set_title("BLEU by source length")
        ax.legend()
        pictures += embedded(png(fig), "BLEU by source length")
    drops = ""
    if report.drops:
        keys = [k for k in report.drops[0] if k != "line"]
        rows = [[d["line"], *(d[k] for k in keys)] for d in report.drops]
        drops = "<h2>Largest sentence-BLEU drops</h2>" + _html_table(["line", *keys], rows)
    note = ""
    if report.test:
        against = html.escape(report.systems[0].name)
        note = f"<p>± is the 95% confidence interval; p-values: {TESTS[report.test]} against "
        note += f"{against}.</p>"
    table = _html_table(*_table(report))
    return PAGE.format(table=table, note=note, sigs=sigs, pictures=pictures, drops=drops)


def _html_table(header: list, rows: list[list]) -> str:
    def row(tag: str, cells) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"

    return "<table>" + row("th", header) + "".join(row("td", r) for r in rows) + "</table>"


PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>nmt evaluation</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}}table{{border-collapse:collapse;margin:1em 0;font-size:14px}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f3f3f3}}code{{font-size:12px}}img{{max-width:100%}}figure{{margin:1.5em 0}}
</style></head><body><h1>Evaluation report</h1>{table}{note}<h2>Signatures</h2><ul>{sigs}</ul>
<h2>Pictures</h2>{pictures}{drops}</body></html>
"""
