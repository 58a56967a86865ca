# Download / verify / unpack CIFAR-10 once into a compact uint8 cache.


rule prepare_data:
    input:
        # A local archive or image folder is tracked, so replacing it prepares the data again.
        pipeline.data_inputs(config),
    output:
        "results/data/cifar10.npz",
    params:
        args=pipeline.prepare_args(config),
    log:
        "logs/prepare_data.log",
    conda:
        "../envs/cifarlab.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m cifarlab prepare {params.args} --out {output} --workdir results/data "
        "--no-progress > {log} 2>&1"
