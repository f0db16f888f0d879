"""HTML of executed notebooks, and the run's ``index.html``: how the run went first, then every notebook and report."""

from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

from lib import atomic
from lib.pipeline import outputs as nb_outputs
from lib.pipeline import summary
from lib.pipeline.formats import show
from lib.pipeline.record import RunState
from lib.redact import redact
from lib.units import Unit

# JupyterLab's look, without the CDN scripts (require.js, MathJax, Mermaid): reports open offline.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

_INDEX = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pipeline run {{ state.run_id }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.2rem auto; max-width: 78rem; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin: .2rem 0; } h2 { font-size: 1.15rem; margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
td, th { border: 1px solid #ccc; padding: .25rem .55rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176317; } .failed { color: #b00020; font-weight: bold; } .pending, .cached { color: #666; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(14.5rem, 1fr)); gap: .7rem; margin: .8rem 0; }
.card { border: 1px solid #ccc; border-left: 5px solid #999; border-radius: 4px; padding: .5rem .7rem; font-size: .86rem; }
.card.good { border-left-color: #2e7d32; } .card.bad { border-left-color: #b00020; }
.card h3 { margin: 0; font-size: .78rem; text-transform: uppercase; letter-spacing: .04em; color: #555; }
.card .headline { font-size: 1.02rem; font-weight: 600; margin: .2rem 0 .3rem; }
.card p { margin: .12rem 0; } .meta { color: #555; font-size: .9rem; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; } details { margin: .8rem 0; } summary { cursor: pointer; }
</style></head>
<body>
<h1>Pipeline run <code>{{ state.run_id }}</code>: <span class="{{ 'ok' if state.ok else 'failed' }}">{{ 'finished' if state.ok else 'FAILED' }}</span></h1>
<p class="meta">profile <code>{{ state.profile }}</code>{% if state.overrides %} with {% for k, v in state.overrides.items() %}<code>{{ k }}={{ v }}</code> {% endfor %}{% endif %}
 &middot; started {{ state.started }} &middot; finished {{ state.finished or '-' }}
 &middot; MLflow {% if mlflow.url %}<a href="{{ mlflow.url }}">run {{ mlflow.run_id }}</a>{% else %}run <code>{{ mlflow.run_id }}</code> at <code>{{ mlflow.tracking_uri }}</code>{% endif %}</p>
{% if state.failure %}<h2>Failure</h2><pre>{{ failure_text }}</pre>{% endif %}
<div class="cards">{% for card in cards %}<div class="card {{ card.tone }}"><h3>{{ card.title }}</h3><p class="headline">{{ card.headline }}</p>
{% for line in card.lines %}<p>{{ line }}</p>{% endfor %}</div>{% endfor %}</div>
{% if candidates[1] %}<h2>Candidates on the test window</h2>
<table><tr>{% for h in candidates[0] %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in candidates[1] %}<tr>{% for cell in row %}<td{% if not loop.first %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>time</th><th>what it says</th><th>report</th></tr>
{% for nb in notebooks %}<tr><td>{{ nb.name }}</td><td class="{{ nb.status }}">{{ nb.status }}</td>
<td>{% if nb.cached_from %}<a href="../{{ nb.cached_from }}/index.html">from run {{ nb.cached_from }}</a>{% else %}{{ nb.time }}{% endif %}</td>
<td>{{ nb.verdict }}</td>
<td>{% if nb.html %}<a href="{{ nb.html }}">{{ nb.html }}</a>{% endif %}{% if nb.ipynb %} &middot; <a href="{{ nb.ipynb }}">.ipynb</a>{% endif %}</td></tr>
{% endfor %}</table>
{% if links %}<h2>Reports and dashboards</h2>
<ul>{% for nb, label, href in links %}<li>{{ nb }}: <a href="{{ href }}">{{ label }}</a></li>
{% endfor %}</ul>{% endif %}
<details><summary>Every recorded figure ({{ metric_count }})</summary>
<table><tr><th>notebook</th><th>figure</th><th>value</th></tr>
{% for nb, values in metrics.items() %}{% for k, v in values.items() %}<tr><td>{{ nb }}</td><td>{{ k }}</td><td class="num">{{ v }}</td></tr>
{% endfor %}{% endfor %}</table></details>
{% if tags %}<details><summary>Data versions and tags</summary>
<table><tr><th>notebook</th><th>tag</th><th>value</th></tr>
{% for nb, values in tags.items() %}{% for k, v in values.items() %}<tr><td>{{ nb }}</td><td>{{ k }}</td><td><code>{{ v }}</code></td></tr>
{% endfor %}{% endfor %}</table></details>{% endif %}
<p class="meta">Also here: <a href="params.yaml">params.yaml</a> &middot; <a href="outputs.json">outputs.json</a> &middot; <a href="run.json">run.json</a></p>
</body></html>
"""
)


def render_notebook(executed: Path) -> Path:
    """Write ``<name>.html`` beside the executed notebook."""
    exporter = HTMLExporter(
        extra_loaders=[jinja2.DictLoader({"offline.html.j2": _OFFLINE_TEMPLATE})], template_file="offline.html.j2"
    )
    body, _ = exporter.from_notebook_node(nbformat.read(str(executed), as_version=4))
    return atomic.write_text(executed.with_suffix(".html"), body)


def mlflow_url(info: dict) -> str | None:
    """The run's page in the MLflow UI, when the tracking server is one (http or https)."""
    uri = redact(info["tracking_uri"]).rstrip("/").replace("***@", "")
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"


def write_index(run_dir: Path, state: RunState, outputs: dict, mlflow_info: dict) -> Path:
    """``index.html`` of a run: how it went (summary, candidates), every notebook with its verdict and
    reports, and the rest folded (every recorded figure, data versions)."""
    notebooks = []
    for name in state.notebooks:
        seconds = state.durations.get(name)
        notebooks.append(
            {
                "name": name,
                "status": state.status.get(name, "pending"),
                "time": show(seconds, Unit.SECONDS) if seconds is not None else "",
                "cached_from": state.cached_from.get(name),
                "verdict": outputs.get(name, {}).get("verdict", ""),
                "html": f"{name}.html" if (run_dir / f"{name}.html").exists() else None,
                "ipynb": f"{name}.ipynb" if (run_dir / f"{name}.ipynb").exists() else None,
            }
        )
    metrics = {
        nb: {k: show(v, unit) for k, (v, unit) in nb_outputs.figures(nb, values).items()}
        for nb, values in outputs.items()
    }
    html = _INDEX.render(
        state=state,
        cards=summary.cards(outputs),
        candidates=summary.candidates(outputs),
        notebooks=notebooks,
        metrics={k: v for k, v in metrics.items() if v},
        metric_count=sum(len(v) for v in metrics.values()),
        mlflow={**mlflow_info, "tracking_uri": redact(mlflow_info["tracking_uri"]), "url": mlflow_url(mlflow_info)},
        failure_text=state.failure.format(state.run_id) if state.failure else "",
        tags={nb: values["mlflow_tags"] for nb, values in outputs.items() if values.get("mlflow_tags")},
        # files a notebook wrote into the run folder and recorded as links={label: path in the run}
        links=[(nb, label, href) for nb, values in outputs.items() for label, href in values.get("links", {}).items()],
    )
    return atomic.write_text(run_dir / "index.html", html)
