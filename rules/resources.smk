# Job resources: config.resources (what a job needs) and config.cluster (where it runs).
# Local runs use threads and the gpu resource; the SLURM profile turns all of them into
# sbatch options (profiles/slurm/, README "Run on a cluster"). Every rule asks with its name:
#     threads: job_threads("<rule>")
#     resources: **job_resources("<rule>")


def job_threads(rule_name):
    return config["resources"][rule_name]["cpus"]


def job_resources(rule_name):
    """mem_mb (config.resources.<rule>.mem_mb on the first attempt, n times it on attempt n with
    --retries), runtime, gpu (rules that can use GPUs) and the SLURM placement from config.cluster
    (account, partition, qos and, for jobs with GPUs, GPU model and constraint; unset keys are left
    out of the sbatch call)."""
    wanted = config["resources"][rule_name]
    cluster = config["cluster"]
    gpu = wanted.get("gpus", 0) > 0
    placement = {
        "slurm_account": cluster["account"],
        "slurm_partition": (gpu and cluster["gpu_partition"]) or cluster["partition"],
        "qos": cluster["qos"],
        "gpu_model": cluster["gpu_model"] if gpu else None,
        "constraint": cluster["gpu_constraint"] if gpu else None,
    }
    base = wanted["mem_mb"]
    sized = {
        "mem_mb": lambda wildcards, attempt: base * attempt,
        "runtime": wanted["runtime"],
    }
    if "gpus" in wanted:
        sized["gpu"] = wanted["gpus"]
    return {**{k: v for k, v in placement.items() if v is not None}, **sized}
