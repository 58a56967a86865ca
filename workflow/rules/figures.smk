# Every figure of the study, drawn from the tables and the runs' histories and first-layer
# units (first_layer.pt, written before a run's metrics.json: no weights are read).
# Snakemake's report files each under its category (learning curves, one per experiment,
# first-layer weights, the findings over training) and the per-run curves under "Runs".


rule figures:
    input:
        runs=rules.aggregate.output.runs,
        points=rules.aggregate.output.points,
        histories=expand(RUN_FILES["history"], run=RUNS),
    output:
        png=[
            report(
                f"{FIGURE_DIR}/{f.name}.png",
                caption=f"../report/{f.caption}",
                category=f.category,
                subcategory=f.subcategory,
                labels={"figure": f.name.rsplit("/", 1)[-1]},
            )
            for f in FIGURE_ENTRIES
        ],
        svg=[f"{FIGURE_DIR}/{f.name}.svg" for f in FIGURE_ENTRIES if "svg" in f.formats],
    log:
        f"{LOGS}/figures.log",
    localrule: True
    conda:
        "../envs/cifarlab.yaml"
    # The per-run figures are drawn in parallel (nothing else runs while this rule does);
    # Snakemake gives a job at most the --cores (--local-cores on a cluster) there are.
    threads: 4
    params:
        tables=lambda w, input: os.path.dirname(input.runs),
        runs=lambda w, input: os.path.dirname(os.path.dirname(input.histories[0])),
        out=lambda w, output: os.path.dirname(output.png[0]),
    shell:
        f"bash {LOGGED} {{log}} python -m cifarlab figures --tables {{params.tables}} "
        "--runs {params.runs} --out {params.out} --jobs {threads}"
