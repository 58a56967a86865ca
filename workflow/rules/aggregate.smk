# Every run's metrics and history -> tables (CSV), the long-format export and the
# comparison with the published numbers.


rule aggregate:
    input:
        metrics=expand(RUN_FILES["metrics"], run=RUNS),
        histories=expand(RUN_FILES["history"], run=RUNS),
    output:
        runs=report(
            f"{TABLES}/runs.csv", caption="../report/runs.rst", category="Tables"
        ),
        published=report(
            f"{TABLES}/published.csv",
            caption="../report/published.rst",
            category="Tables",
        ),
        effects=report(
            f"{TABLES}/effects.csv", caption="../report/effects.rst", category="Tables"
        ),
        effects_by_epoch=f"{TABLES}/effects_by_epoch.csv",
        points=f"{TABLES}/points.csv",
        experiments=expand(
            f"{TABLES}/experiment_{{name}}.csv", name=list(config["experiments"])
        ),
        long_csv=f"{TABLES}/history_long.csv",
        long_parquet=f"{TABLES}/history_long.parquet",
        plan=f"{TABLES}/plan.json",
        experiments_json=f"{TABLES}/experiments.json",
    log:
        f"{LOGS}/aggregate.log",
    localrule: True
    conda:
        "../envs/cifarlab.yaml"
    params:
        plan=PLAN,
        experiments=config["experiments"],
        profile=config.get("profile", ""),
        runs=lambda w, input: os.path.dirname(os.path.dirname(input.metrics[0])),
        out=lambda w, output: os.path.dirname(output.runs),
    script:
        "../scripts/aggregate.py"
