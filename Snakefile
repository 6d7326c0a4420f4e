# sdi: dataset augmentation with Stable Diffusion by Semantic Distribution Infilling.
# This file is a table of contents; stages live in rules/, logic in the sdi package.
from snakemake.utils import min_version

from pathlib import Path

from sdi.config.validation import yaml_problem

min_version("9.0")

# Snakemake's message for a config file it cannot parse names neither file nor line. This file it
# reads here; a --configfile it reads before this Snakefile (`python -m sdi.config FILE` names the line).
if Path("config/config.yaml").is_file() and (
    problem := yaml_problem("config/config.yaml")
):
    raise WorkflowError(problem)


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/config.smk"
include: "rules/resources.smk"
include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/projector.smk"
include: "rules/sampling.smk"
include: "rules/generation.smk"
include: "rules/filtering.smk"
include: "rules/classifier.smk"
include: "rules/report.smk"
include: "rules/export.smk"


rule all:
    input:
        all_targets(),
