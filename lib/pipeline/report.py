"""HTML of executed notebooks and the run's ``index.html`` that links them with the headline metrics."""

from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

from lib import atomic
from lib.pipeline import outputs as nb_outputs
from lib.pipeline.record import RunState

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
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
.ok { color: #176317; } .failed { color: #b00020; font-weight: bold; } .pending { color: #777; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; }
</style></head>
<body>
<h1>Pipeline run <code>{{ state.run_id }}</code></h1>
<p>Status: <span class="{{ 'ok' if state.ok else 'failed' }}">{{ 'finished' if state.ok else 'FAILED' }}</span>
 &middot; profile <code>{{ state.profile }}</code> &middot; started {{ state.started }} &middot; finished {{ state.finished or '-' }}</p>
<p>MLflow: run <code>{{ mlflow.run_id }}</code> in experiment {{ mlflow.experiment_id }} at <code>{{ mlflow.tracking_uri }}</code></p>
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>seconds</th><th>report</th><th>notebook</th></tr>
{% for nb in notebooks %}<tr><td>{{ nb.name }}</td><td class="{{ nb.status }}">{{ nb.status }}</td><td>{{ nb.seconds }}</td>
<td>{% if nb.html %}<a href="{{ nb.html }}">{{ nb.html }}</a>{% endif %}</td>
<td>{% if nb.ipynb %}<a href="{{ nb.ipynb }}">{{ nb.ipynb }}</a>{% endif %}</td></tr>
{% endfor %}</table>
{% if state.failure %}<h2>Failure</h2><pre>{{ failure_text }}</pre>{% endif %}
<h2>Headline metrics</h2>
<table><tr><th>notebook</th><th>metric</th><th>value</th></tr>
{% for nb, values in metrics.items() %}{% for k, v in values.items() %}<tr><td>{{ nb }}</td><td>{{ k }}</td><td>{{ '%.6g' % v }}</td></tr>
{% endfor %}{% endfor %}</table>
{% if tags %}<h2>Data versions and tags</h2>
<table><tr><th>notebook</th><th>tag</th><th>value</th></tr>
{% for nb, values in tags.items() %}{% for k, v in values.items() %}<tr><td>{{ nb }}</td><td>{{ k }}</td><td><code>{{ v }}</code></td></tr>
{% endfor %}{% endfor %}</table>{% endif %}
{% if links %}<h2>Reports and dashboards</h2>
<ul>{% for nb, label, href in links %}<li>{{ nb }}: <a href="{{ href }}">{{ label }}</a></li>
{% endfor %}</ul>{% endif %}
<p>Also here: <a href="params.yaml">params.yaml</a> &middot; <a href="outputs.json">outputs.json</a> &middot; <a href="run.json">run.json</a></p>
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


def write_index(run_dir: Path, state: RunState, outputs: dict, mlflow_info: dict) -> Path:
    """``index.html`` of a run: every notebook, its status and reports, headline metrics, data versions."""
    notebooks = []
    for name in state.notebooks:
        notebooks.append(
            {
                "name": name,
                "status": state.status.get(name, "pending"),
                "seconds": state.durations.get(name, ""),
                "html": f"{name}.html" if (run_dir / f"{name}.html").exists() else None,
                "ipynb": f"{name}.ipynb" if (run_dir / f"{name}.ipynb").exists() else None,
            }
        )
    metrics = {nb: nb_outputs.headline_metrics(values) for nb, values in outputs.items()}
    html = _INDEX.render(
        state=state,
        notebooks=notebooks,
        metrics={k: v for k, v in metrics.items() if v},
        mlflow=mlflow_info,
        failure_text=state.failure.format(state.run_id) if state.failure else "",
        tags={nb: values["mlflow_tags"] for nb, values in outputs.items() if values.get("mlflow_tags")},
        # files a notebook wrote into the run folder and recorded as links={label: path in the run}
        links=[(nb, label, href) for nb, values in outputs.items() for label, href in values.get("links", {}).items()],
    )
    return atomic.write_text(run_dir / "index.html", html)
