# The report: a papermill-executed notebook (kept in results/) rendered to HTML and Markdown.


rule report:
    input:
        notebook=workflow.source_path("../notebooks/report.ipynb"),
        tables=rules.aggregate.output,
        figures=rules.figures.output,
    output:
        html=f"{REPORT_DIR}/report.html",
        md=f"{REPORT_DIR}/report.md",
        notebook="results/report/report.ipynb",
    params:
        config_files=" ".join(map(str, workflow.configfiles)),
        profile=config.get("profile", ""),
        report_dir=REPORT_DIR,
    log:
        "logs/report.log",
    conda:
        "../envs/cifarlab.yaml"
    localrule: True
    shell:
        "cifarlab report --notebook {input.notebook} --executed {output.notebook} "
        "--tables results/tables --figures results/figures --runs results/runs "
        "--out {params.report_dir} --profile {params.profile:q} "
        "--config-files {params.config_files:q} > {log} 2>&1"
