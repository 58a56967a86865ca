# One job per run. The run's folder name is its canonical id, so a changed setting trains
# a new run beside the old one. The resumable checkpoint is deliberately not an output:
# Snakemake deletes the outputs of a failed job, and a retried job must resume from it.
# Nor are the weights (best.pt): what the tables, figures and report need of a run is its
# metrics, history and first_layer.pt (rundir.py), so a run brought back from a GPU
# machine without its 13 MB of weights (cifarlab bundle) is complete here too.


rule train:
    input:
        # ancient: a prepare job rerun while the manifest exists plans no completed run
        # again. A run whose outputs Snakemake deleted anyway (--rerun-incomplete,
        # --forcerun) is restored from its record in results/runs/<id>/record/.
        data=ancient(DATA_MANIFEST),
    output:
        metrics=RUN_FILES["metrics"],
        history=RUN_FILES["history"],
    log:
        LAYOUT.train_log,
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    priority: run_priority
    conda:
        "../envs/cifarlab.yaml"
    threads: TRAIN.get("threads", 1)
    resources:
        mem_mb=TRAIN.get("mem_mb", 6000),
        runtime=run_runtime,
        gpu=TRAIN.get("gpus", 0),
    params:
        spec=run_spec_json,
        out=f"{RUNS_DIR}/{{run}}",
    # The log gets everything; the terminal (fd 3, a copy of stderr) one line when the run
    # ends: its test accuracy and the grid's progress. The data, progress and worker paths
    # and how the device runs the steps (TRAIN_ARGS: device, execution switches, checkpoint
    # interval) are not params: profiles sharing a run (same spec, same data) must not
    # rerun its job, and neither must a change of device or switches.
    shell:
        f"python -m cifarlab train --spec {{params.spec:q}} --data {DATA_CACHE} --out {{params.out}} "
        f"--threads {{threads}} {TRAIN_ARGS} "
        f"--progress {LAYOUT.progress} --progress-fd 3 "
        f"{WORKER_FLAG} 3>&2 > {{log}} 2>&1"
