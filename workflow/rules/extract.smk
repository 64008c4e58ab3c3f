rule extract:
    input:
        rules.manifest.output[0],
    output:
        directory(f"{DATA}/features/{{dataset}}"),
    params:
        cfg=stage_params("extract"),
        manifest=subpath(input[0], parent=True),
    threads: RESOURCES["extract_threads"]
    resources:
        mem_mb=lambda wildcards, attempt: RESOURCES["extract_mem_mb"] * attempt,
        runtime=RESOURCES["extract_runtime_min"],
    log:
        f"{LOGS}/extract/{{dataset}}.log",
    conda:
        AVBIAS_ENV
    shell:
        "avbias extract --params {params.cfg:q} --dataset {wildcards.dataset} --manifest {params.manifest} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule extract_all:
    input:
        expand(rules.extract.output[0], dataset=DATASETS),
