# Every figure of the study, drawn from the tables and the runs' histories and weights.


rule figures:
    input:
        runs="results/tables/runs.csv",
        points="results/tables/points.csv",
        histories=expand(RUN_FILES["history"], run=RUNS),
        weights=expand(RUN_FILES["best"], run=RUNS),
    output:
        png=[
            report(f"results/figures/{name}.png", caption="../report/figure.rst", category="Figures")
            for name in FIGURES
        ],
        svg=[f"results/figures/{name}.svg" for name in FIGURES],
    params:
        tables=lambda w, input: os.path.dirname(input.runs),
        runs=lambda w, input: os.path.dirname(os.path.dirname(input.histories[0])),
        out=lambda w, output: os.path.dirname(output.png[0]),
    log:
        "logs/figures.log",
    conda:
        "../envs/cifarlab.yaml"
    localrule: True
    shell:
        "python -m cifarlab figures --tables {params.tables} --runs {params.runs} --out {params.out} "
        "> {log} 2>&1"
