rule extract:
    input:
        f"{DATA}/manifest/{{dataset}}/clips.parquet",
    output:
        directory(f"{DATA}/features/{{dataset}}"),
    params:
        cfg=stage_params("extract"),
        manifest=subpath(input[0], parent=True),
    threads: THREADS["extract_threads"]
    resources:
        mem_mb=lambda wildcards, attempt: THREADS["extract_mem_mb"] * attempt,
        runtime=THREADS["extract_runtime_min"],
    conda:
        ENV
    log:
        f"{LOGS}/extract/{{dataset}}.log",
    shell:
        "avbias extract --params {params.cfg:q} --dataset {wildcards.dataset} --manifest {params.manifest} --out {output} "
        "--threads {threads} > {log} 2>&1"
