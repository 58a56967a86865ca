# Download / verify / unpack CIFAR-10 once into a compact uint8 cache.
# The rule's output is the cache's manifest (identity, checksum, counts, arguments). The
# cache itself is written beside it, and replaced only once the new one is whole:
# Snakemake deletes a job's outputs before running it and after it fails, and a failed
# prepare (a wrong md5, say) must never destroy a good cache. The planner
# (pipeline.data_state) deletes the manifest when the data must be prepared again.


rule prepare_data:
    input:
        # The arguments, written by the planner (pipeline.data_state) when they change.
        request=DATA_REQUEST,
        # A local archive or image folder is tracked, so replacing it prepares the data again.
        source=pipeline.data_inputs(config),
    output:
        DATA_MANIFEST,
    log:
        LAYOUT.prepare_log,
    conda:
        "../envs/cifarlab.yaml"
    # An image folder is decoded by this many processes (prepare of the real tarball on 2
    # cores: 21.2 s in one, 16.5 s in 2; reading the tarball stays serial). Nothing else
    # can run before the data exists, so the rule takes the cores it is given.
    threads: 4
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        cache=DATA_CACHE,
        # downloads and temporary files go beside the cache
        workdir=lambda w, input: os.path.dirname(input.request),
    shell:
        f"bash {LOGGED} {{log}} python -m cifarlab prepare --request-file {{input.request}} "
        "--out {params.cache} --workdir {params.workdir} --workers {threads}"
