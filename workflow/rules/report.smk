# The report: a papermill-executed notebook (kept in results/<profile>/) rendered to HTML
# and Markdown in the profile's report folder.


rule report:
    input:
        notebook=workflow.source_path("../notebooks/report.ipynb"),
        tables=rules.aggregate.output,
        figures=rules.figures.output,
        runs_csv=rules.aggregate.output.runs,
        first_figure=rules.figures.output.png[0],
    output:
        html=f"{REPORT_DIR}/report.html",
        md=f"{REPORT_DIR}/report.md",
        notebook=LAYOUT.notebook,
    log:
        f"{LOGS}/report.log",
    localrule: True
    conda:
        "../envs/cifarlab.yaml"
    params:
        config_files=" ".join(
            os.path.relpath(f, workflow.basedir) for f in workflow.configfiles
        ),
        profile=config.get("profile", ""),
        notes=config.get("profile_notes") or "",
        runs=RUNS_DIR,
        report_dir=lambda w, output: os.path.dirname(output.html),
        tables=lambda w, input: os.path.dirname(input.runs_csv),
        figures=lambda w, input: os.path.dirname(input.first_figure),
    shell:
        f"bash {LOGGED} {{log}} python -m cifarlab report --notebook {{input.notebook}} "
        "--executed {output.notebook} --tables {params.tables} --figures {params.figures} "
        "--runs {params.runs} --out {params.report_dir} --profile {params.profile:q} "
        "--config-files {params.config_files:q} --notes={params.notes:q}"
