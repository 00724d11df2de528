"""Plan the format stage: one ``format`` step over the upstream shards.

Its fingerprint covers the upstream output, every formatter's options in order, and the
versions of the libraries that change their output (ftfy; a plug-in formatter's ``libraries``).
"""

from __future__ import annotations

from fineflow.fingerprint import library_versions
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.format import formatters, step
from fineflow.tasks.format.config import FormatStage


def build_params(config: FormatStage) -> dict:
    specs = []
    for options in config.formatters:
        formatter = formatters.get(options.name, options.module)
        specs.append({"name": formatter.name, "module": formatter.module, "options": options.model_dump(mode="json", exclude={"module"})})
    return {"formatters": specs}


def plan_format(config: FormatStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    params = build_params(config)
    libraries = sorted({library for options in config.formatters for library in formatters.get(options.name, options.module).libraries})
    return [
        ctx.step(
            step, "format_shard", step="format", params=params,
            fingerprint_params={**params, "formatter_libraries": library_versions(libraries)},
            chained={"upstream": ctx.inputs.fingerprint}, shards=ctx.inputs.shards(),
        )
    ]
