# Every run's metrics and history -> tables (CSV), the long-format export and the
# comparison with the published numbers.


rule aggregate:
    input:
        metrics=expand(RUN_FILES["metrics"], run=RUNS),
        histories=expand(RUN_FILES["history"], run=RUNS),
    output:
        runs=report("results/tables/runs.csv", caption="../report/runs.rst", category="Tables"),
        published=report(
            "results/tables/published.csv", caption="../report/published.rst", category="Tables"
        ),
        effects=report(
            "results/tables/effects.csv", caption="../report/effects.rst", category="Tables"
        ),
        points="results/tables/points.csv",
        experiments=expand("results/tables/experiment_{name}.csv", name=list(config["experiments"])),
        long_csv="results/tables/history_long.csv",
        long_parquet="results/tables/history_long.parquet",
        plan="results/tables/plan.json",
        experiments_json="results/tables/experiments.json",
    params:
        plan=PLAN,
        experiments=config["experiments"],
        profile=config.get("profile", ""),
        runs=lambda w, input: os.path.dirname(os.path.dirname(input.metrics[0])),
        out=lambda w, output: os.path.dirname(output.runs),
    log:
        "logs/aggregate.log",
    conda:
        "../envs/cifarlab.yaml"
    localrule: True
    script:
        "../scripts/aggregate.py"
